# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
# `make test` is the whole suite: unit and system tests, then the .deb (`make deb`, lintian
# included) installed and proven on fresh Debian 12 and 13 roots (`make package-test`).
PYTHON := .venv/bin/python

.PHONY: setup test demo deb roots package-test
setup:
	tools/setup

test: setup deb roots
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PYTHON) tools/demo.py

# build/deb/portguard_VERSION_all.deb, built with dpkg-buildpackage and checked by lintian.
deb:
	tools/build-deb

# Cached debootstrapped bookworm and trixie roots (built once, then reused): minimal ones for
# the package test, and ones with real Debian daemons for tests/system/test_debian_services.py.
roots:
	tools/roots bookworm trixie bookworm-services trixie-services bookworm-podman trixie-podman

package-test: setup deb roots
	$(PYTHON) -m pytest tests/system/test_package.py $(PYTEST_ARGS)
