"""What each runtime operation makes kettle.cgroups import.

kettle-runtime starts once per container operation, so an import that an operation does not
need is paid on every call.  Each check runs in a fresh interpreter (this one has imported
everything already) on a plain directory tree standing in for a v1 cgroupfs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from pathlib import Path

# Modules that cost milliseconds to import and that no hot path needs.
HEAVY = {"dataclasses", "inspect", "ast", "re", "typing", "threading"}

SETUP = """
import json, os, sys
tmp = sys.argv[1]
root = os.path.join(tmp, "cgroup")
for c in ("pids", "memory", "devices", "freezer"):
    os.makedirs(os.path.join(root, c))
with open(os.path.join(tmp, "mountinfo"), "w") as f:
    for i, c in enumerate(("pids", "memory", "devices")):
        f.write(f"{40 + i} 30 0:{40 + i} / {root}/{c} rw - cgroup cgroup rw,{c}\\n")
with open(os.path.join(tmp, "self-cgroup"), "w") as f:
    f.write("3:pids:/\\n2:memory:/\\n1:devices:/\\n0::/\\n")
before = set(sys.modules)
"""

REPORT = """
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded_by(tmp: Path, code: str) -> set[str]:
    """The modules that code imports in a fresh interpreter, after SETUP."""
    out = subprocess.run(
        [sys.executable, "-c", SETUP + code + REPORT, str(tmp)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def cgroup_modules(mods: set[str]) -> set[str]:
    return {m.rsplit(".", 1)[1] for m in mods if m.startswith("kettle.cgroups.")}


def test_import_loads_only_the_host_probe(tmp_path: Path) -> None:
    mods = loaded_by(tmp_path, "import kettle.cgroups")
    assert cgroup_modules(mods) == {"fsutil", "host"}
    assert not mods & HEAVY


def test_create_path_loads_v1_and_the_v1_writer_only(tmp_path: Path) -> None:
    code = """
from kettle import cgroups
host = cgroups.Host(
    root=root,
    mountinfo=os.path.join(tmp, "mountinfo"),
    self_cgroup=os.path.join(tmp, "self-cgroup"),
)
mgr = cgroups.new_manager("ctr", "ctr", host=host)
mgr.create()
d = mgr.path("devices")
for name, text in (("devices.list", "a *:* rwm\\n"), ("devices.allow", ""), ("devices.deny", "")):
    with open(os.path.join(d, name), "w") as f:
        f.write(text)
mgr.set({"devices": [{"allow": False, "access": "rwm"}]})
assert open(os.path.join(d, "devices.allow")).read() == "c 10:200 rwm"  # the last default
"""
    mods = loaded_by(tmp_path, code)
    assert "v1" in cgroup_modules(mods)
    assert not cgroup_modules(mods) & {"v2", "disabled", "devicefilter", "bpfdevices"}
    assert not cgroup_modules(mods) & {"setv2", "stats", "freezer", "manager"}
    assert not mods & HEAVY


def test_state_kill_delete_load_no_resource_code(tmp_path: Path) -> None:
    code = """
from kettle import cgroups
paths = {c: os.path.join(root, c, "ctr") for c in ("pids", "memory", "freezer")}
for d in paths.values():
    os.mkdir(d)
state_file = os.path.join(paths["freezer"], "freezer.state")
with open(state_file, "w") as f:
    f.write("THAWED")
mgr = cgroups.from_state({
    "mode": "v1",
    "root": root,
    "paths": paths,
    "mounts": {c: os.path.join(root, c) for c in paths},
    "created": list(paths.values()),
})
assert mgr.exists() and not mgr.is_frozen() and mgr.pids() == []
mgr.kill_all(15)  # freezes around the signals: the freezer is needed, the rest is not
os.remove(state_file)  # a plain directory, unlike a cgroup, must be empty for rmdir
mgr.destroy()
assert not any(os.path.exists(d) for d in paths.values())
"""
    mods = loaded_by(tmp_path, code)
    assert cgroup_modules(mods) == {"fsutil", "host", "v1", "common", "freezer"}
    assert not mods & HEAVY


def test_lazy_names_stay_importable() -> None:
    from kettle import cgroups
    from kettle.cgroups.disabled import DisabledManager
    from kettle.cgroups.v1 import V1Manager
    from kettle.cgroups.v2 import V2Manager

    assert cgroups.V1Manager is V1Manager
    assert cgroups.V2Manager is V2Manager
    assert cgroups.DisabledManager is DisabledManager
    assert cgroups.Manager.__name__ == "Manager"
    assert set(typing.get_args(cgroups.Mode)) == {"v1", "hybrid", "v2"}
    for name in cgroups.__all__:
        assert getattr(cgroups, name) is not None
    try:
        _ = cgroups.NoSuchThing  # type: ignore[attr-defined]
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("unknown attributes must raise AttributeError")
