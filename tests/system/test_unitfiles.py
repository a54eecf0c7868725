"""The unit-file reader against systemd itself: for the same files, the fragment, the drop-ins
in their order and the settings the guard mirrors are what `systemctl show` reports.

The trees mix what a host has: a vendor unit in /usr/lib with a vendor drop-in, an admin's
override of the same name in /etc, a runtime drop-in in /run, a template with instance,
template and name-prefix drop-ins, the type-wide service.d, and a masked drop-in.
"""

from __future__ import annotations

import json
import shlex

import pytest

from tests.system.guarded import PYTHON, SRC
from tests.system.sandbox import Sandbox

FILES = {
    "/usr/lib/systemd/system/pg-vendor.service": "[Service]\nExecStart=/bin/sleep 1\nUser=daemon\n",
    "/usr/lib/systemd/system/pg-vendor.service.d/10-vendor.conf": "[Service]\nUser=bin\n",
    "/etc/systemd/system/pg-vendor.service.d/10-vendor.conf": "[Service]\nUser=sys\n",
    "/run/systemd/system/pg-vendor.service.d/20-run.conf": "[Service]\nGroup=adm\n",
    "/usr/lib/systemd/system/pg-tmpl@.service": "[Service]\nExecStart=/bin/sleep 1\nUser=daemon\n",
    "/usr/lib/systemd/system/pg-tmpl@.service.d/30-template.conf": "[Service]\nUser=games\n",
    "/etc/systemd/system/pg-.service.d/40-prefix.conf": "[Service]\nUser=man\n",
    "/etc/systemd/system/pg-tmpl@one.service.d/50-instance.conf": "[Service]\nUser=mail\n",
    "/run/systemd/system/service.d/05-everyone.conf": "[Service]\nSupplementaryGroups=adm\n",
    "/usr/lib/systemd/system/pg-masked.service": "[Service]\nExecStart=/bin/sleep 1\nUser=news\n",
    "/usr/lib/systemd/system/pg-masked.service.d/60-vendor.conf": "[Service]\nUser=uucp\n",
}
MASKED_DROPIN = "/etc/systemd/system/pg-masked.service.d/60-vendor.conf"
UNITS = ("pg-vendor.service", "pg-tmpl@one.service", "pg-tmpl@two.service", "pg-masked.service")

# The reader's view, inside the sandbox, of each unit: fragment, drop-ins, last User=; and
# systemd's paths as files (a merged /usr makes /lib/... and /usr/lib/... one file, and
# systemd names fragments by the one and drop-ins by the other), its masked drop-ins left
# out as the reader leaves them out (they contribute nothing).
READER = """
import json, os, sys
from portguard.host.unitfiles import UnitFiles
files = UnitFiles("/")
out = {}
def real(paths):
    return [os.path.realpath(p) for p in paths if os.path.realpath(p) != "/dev/null"]
for unit, shown in json.loads(sys.argv[1]).items():
    fragment, dropins = files.locate(unit)
    users = files.read_settings(unit).get(("Service", "User"), [])
    out[unit] = {"ours": [real([fragment]), real(dropins), users[-1] if users else ""],
                 "systemd": [real([shown[0]]), real(shown[1]), shown[2]]}
print(json.dumps(out))
"""


@pytest.fixture
def trees(sandbox: Sandbox) -> Sandbox:
    for path, text in FILES.items():
        sandbox.write_file(path, text)
    sandbox.run("mkdir", "-p", MASKED_DROPIN.rsplit("/", 1)[0])
    sandbox.run("ln", "-sf", "/dev/null", MASKED_DROPIN)
    sandbox.daemon_reload()
    return sandbox


def test_the_reader_finds_what_systemd_loads(trees: Sandbox) -> None:
    shown = {}
    for unit in UNITS:
        props = trees.unit_properties(unit, "FragmentPath", "DropInPaths", "User")
        # systemd lists drop-ins in the order it applies them.
        shown[unit] = [props["FragmentPath"], shlex.split(props["DropInPaths"]), props["User"]]
    read = trees.run(PYTHON, "-c", READER, json.dumps(shown), env={"PYTHONPATH": SRC})
    views = json.loads(read.stdout)
    for unit in UNITS:
        assert views[unit]["ours"] == views[unit]["systemd"], unit
    user = {unit: views[unit]["ours"][2] for unit in UNITS}
    # The prefix drop-in (pg-.service.d/40-prefix.conf) reaches every pg-* unit and sorts
    # after the admin's 10-vendor.conf, which hid the vendor's file of the same name; an
    # instance's own 50-instance.conf sorts last, for that instance only; a masked drop-in
    # counts for nothing.
    assert user == {"pg-vendor.service": "man", "pg-tmpl@one.service": "mail",
                    "pg-tmpl@two.service": "man", "pg-masked.service": "man"}  # fmt: skip
    vendor = views["pg-vendor.service"]["ours"][1]
    assert "/etc/systemd/system/pg-vendor.service.d/10-vendor.conf" in vendor
    assert not any(p.endswith("10-vendor.conf") and p.startswith("/usr") for p in vendor)
