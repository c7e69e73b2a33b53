"""kettled's and kctl's parts that need no root: metadata, specs, users, config, output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kettle.api import kettle_pb as pb
from kettle.cli.format import status, table
from kettle.daemon import spec as specmod
from kettle.daemon import users
from kettle.daemon.config import load as load_config
from kettle.daemon.containers import parse_signal
from kettle.daemon.logs import LogWriter, read_entries
from kettle.daemon.main import parse
from kettle.daemon.store import Record, Store
from kettle.errors import AlreadyExists, InvalidArgument, NotFound
from kettle.image.config import ImageConfig
from kettle.snapshot.mounts import Mount


def _rec(cid: str, name: str) -> Record:
    return Record(id=cid, name=name, image="img", spec="{}", created_ns=int(cid[:4], 16))


def test_store_finds_by_id_name_and_unique_prefix(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "db"))
    s.add(_rec("abcd1111", "one"))
    s.add(_rec("abce2222", "two"))
    assert s.find("one").id == "abcd1111"
    assert s.find("abce").name == "two"
    assert s.find("abcd1111").name == "one"
    with pytest.raises(NotFound, match="ambiguous container id: abc"):
        s.find("abc")
    with pytest.raises(NotFound, match="no such container: zzz"):
        s.find("zzz")
    with pytest.raises(AlreadyExists, match="name one"):
        s.add(_rec("ffff0000", "one"))
    rec = s.find("one")
    rec.status, rec.exit_code, rec.labels = "exited", 3, {"a": "b"}
    s.update(rec)
    again = Store(str(tmp_path / "db")).find("one")
    assert (again.status, again.exit_code, again.labels) == ("exited", 3, {"a": "b"})
    assert [r.name for r in s.all()] == ["two", "one"]  # newest first
    s.delete("abcd1111")
    with pytest.raises(NotFound):
        s.find("one")
    row = s._db.execute("PRAGMA journal_mode").fetchone()
    assert row[0] == "wal"


def _config(**kw: object) -> ImageConfig:
    base: dict[str, object] = {
        "os": "linux",
        "architecture": "amd64",
        "env": ("PATH=/bin", "A=1"),
        "entrypoint": ("/ep",),
        "cmd": ("default",),
        "working_dir": "/srv",
    }
    base.update(kw)
    return ImageConfig(**base)  # type: ignore[arg-type]


def _build(req: pb.CreateContainerRequest, **kw: object) -> dict[str, object]:
    return specmod.build("ns", "cid", "host", _config(**kw), req, {"uid": 0, "gid": 0})


def test_spec_from_image_and_flags() -> None:
    spec = _build(pb.CreateContainerRequest(image="i", args=["x"], env=["A=2", "B"]))
    proc = spec["process"]
    assert isinstance(proc, dict)
    assert proc["args"] == ["/ep", "x"]
    assert proc["env"] == ["PATH=/bin", "A=2", "HOSTNAME=host", "B="]
    assert proc["cwd"] == "/srv" and proc["terminal"] is False
    assert spec["hostname"] == "host"
    linux = spec["linux"]
    assert isinstance(linux, dict) and linux["cgroupsPath"] == "/ns/cid"
    assert {"type": "network"} in linux["namespaces"]
    spec = _build(pb.CreateContainerRequest(image="i", entrypoint=["/x"], entrypoint_set=True))
    assert isinstance(spec["process"], dict) and spec["process"]["args"] == ["/x"]


def test_spec_refuses_what_it_cannot_honour() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        _build(pb.CreateContainerRequest(image="i", entrypoint_set=True), cmd=None)
    with pytest.raises(InvalidArgument, match="workdir 'rel'"):
        _build(pb.CreateContainerRequest(image="i", workdir="rel"))
    with pytest.raises(InvalidArgument, match="network 'bridge'"):
        _build(pb.CreateContainerRequest(image="i", network="bridge"))
    with pytest.raises(InvalidArgument, match="env"):
        _build(pb.CreateContainerRequest(image="i", env=["=x"]))


def test_host_network_shares_network_and_uts() -> None:
    spec = _build(pb.CreateContainerRequest(image="i", network="host"))
    linux = spec["linux"]
    assert isinstance(linux, dict)
    types = {n["type"] for n in linux["namespaces"]}
    assert "network" not in types and "uts" not in types and "hostname" not in spec


def _layers(tmp_path: Path) -> list[str]:
    upper, top, base = (tmp_path / n for n in ("upper", "top", "base"))
    for d in (upper, top, base):
        (d / "etc").mkdir(parents=True)
    (base / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\nbob:x:7:8::/:/bin/sh\n")
    (top / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\nann:x:10:20::/:/bin/sh\n")
    (base / "etc" / "group").write_text("g20:x:20:\nextra:x:30:ann\nother:x:40:bob\n")
    opts = (f"lowerdir={top}:{base}", f"upperdir={upper}", "workdir=/w")
    return users.layer_dirs([Mount("overlay", "overlay", opts)])


def test_users_resolve_through_the_layers_top_first(tmp_path: Path) -> None:
    dirs = _layers(tmp_path)
    assert dirs == [str(tmp_path / n) for n in ("upper", "top", "base")]
    assert users.resolve("ann", dirs) == {"uid": 10, "gid": 20, "additionalGids": [30]}
    assert users.resolve("ann:extra", dirs) == {"uid": 10, "gid": 30}
    assert users.resolve("10:5", dirs) == {"uid": 10, "gid": 5}
    assert users.resolve("99", dirs) == {"uid": 99, "gid": 0}
    assert users.resolve("", dirs) == {"uid": 0, "gid": 0}
    with pytest.raises(NotFound, match="user 'bob'"):
        users.resolve("bob", dirs)  # the top layer's passwd hides the base's
    with pytest.raises(NotFound, match="group 'nope'"):
        users.resolve("ann:nope", dirs)


def test_users_never_follow_an_image_symlink(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.mkdir()
    (layer / "etc").symlink_to("/etc")
    with pytest.raises(InvalidArgument, match="symlink"):
        users.resolve("root", [str(layer)])


def test_signals() -> None:
    assert parse_signal("") == 9
    assert parse_signal("term") == parse_signal("SIGTERM") == parse_signal("15") == 15
    for bad in ("NOPE", "0", "99"):
        with pytest.raises(InvalidArgument):
            parse_signal(bad)


def test_logs_keep_lines_and_tail(tmp_path: Path) -> None:
    w = LogWriter(str(tmp_path / "log"))
    for i in range(5):
        w.write("stdout" if i % 2 else "stderr", f"l{i}\n".encode())
    w.close()
    entries, offset = read_entries(str(tmp_path / "log"), 2)
    assert [(e["stream"], e["log"]) for e in entries] == [("stdout", "l3\n"), ("stderr", "l4\n")]
    assert offset == os.path.getsize(tmp_path / "log")
    assert read_entries(str(tmp_path / "log"), 0)[0] == []
    assert len(read_entries(str(tmp_path / "log"), -1)[0]) == 5


def test_kettled_config(tmp_path: Path) -> None:
    f = tmp_path / "k.toml"
    f.write_text('root = "/r"\nnamespace = "n"\n[registry]\nplain_http = ["h:5000"]\n')
    cfg = load_config(str(f), required=True)
    assert (cfg.root, cfg.namespace, cfg.plain_http) == ("/r", "n", ["h:5000"])
    cfg = parse(["--config", str(f), "--root", "rel"])
    assert cfg.root == os.path.abspath("rel")
    f.write_text("colour = 1\n")
    with pytest.raises(InvalidArgument, match="unsupported key colour"):
        load_config(str(f), required=True)
    with pytest.raises(InvalidArgument, match="not found"):
        load_config(str(tmp_path / "none"), required=True)
    assert load_config(str(tmp_path / "none"), required=False).root == "/var/lib/kettle"


def test_table_and_status() -> None:
    assert table(["A", "BB"], [["xyz", "1"]]).splitlines() == ["A     BB", "xyz   1"]
    assert status("exited", 3, 0, 1).startswith("Exited (3) ")
    assert status("created", 0, 0, 0) == "Created"


def test_kctl_without_kettled_says_how_to_start_it(tmp_path: Path) -> None:
    sock = str(tmp_path / "none.sock")
    res = subprocess.run(
        [sys.executable, "-m", "kettle.cli.main", "--address", sock, "ps"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 1
    assert res.stderr == (
        f"kctl: cannot connect to kettled at {sock}: is it running? start it with kettled\n"
    )


def test_kctl_start_does_not_import_grpc() -> None:
    code = (
        "import sys, kettle.cli.main as m; m.parser(list(m.COMMANDS)); print('grpc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_api_messages_round_trip() -> None:
    c = pb.Container(id="x", labels={"a": "b"}, command=["sh"], exit_code=-1, pid=7)
    assert pb.Container.decode(c.encode()) == c
    assert pb.Container.FULL_NAME == "kettle.v1.Container"
