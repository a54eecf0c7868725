# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON := .venv/bin/python

.PHONY: setup test demo lint
setup:
	tools/setup

test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PYTHON) tools/demo.py
