"""The shim's command line, socket addresses and runtime options, as containerd passes them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kettle import errors
from kettle.proto import any_pb, runc_options_pb, runtimeoptions_pb, task_pb, wkt
from kettle.shim import address, config, flags
from kettle.shim.start import groups


def test_flags_as_containerd_16_passes_them() -> None:
    argv = [
        "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
        "-publish-binary", "/usr/bin/containerd", "-id", "abc", "-debug", "start",
    ]  # fmt: skip
    f = flags.parse(argv)
    assert (f.namespace, f.address, f.publish_binary, f.id, f.debug, f.action) == (
        "k8s.io",
        "/run/containerd/containerd.sock",
        "/usr/bin/containerd",
        "abc",
        True,
        "start",
    )
    d = flags.parse(["--namespace=x", "-id", "y", "-bundle", "/b", "-debug=false", "delete"])
    assert (d.namespace, d.id, d.bundle, d.debug, d.action) == ("x", "y", "/b", False, "delete")
    serve = flags.parse(["-namespace", "x", "-id", "y", "-address", "/a"])
    assert serve.action == ""
    assert flags.parse(["-v"]).version


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-nope"], "flag provided but not defined: -nope"),
        (["-id"], "flag needs an argument: -id"),
        (["-debug=maybe"], 'invalid boolean value "maybe"'),
        (["stop"], "unknown action"),
        (["start", "extra"], "unexpected arguments"),
    ],
)
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        flags.parse(argv)


def test_socket_path_is_go_filepath_join_then_sha256() -> None:
    want = hashlib.sha256(b"/run/containerd/containerd.sock/default/c1").hexdigest()
    assert address.socket_path("/run/containerd/containerd.sock", "default", "c1") == (
        f"/run/containerd/s/{want}"
    )
    # filepath.Join cleans the path: trailing and doubled slashes do not change the hash.
    assert address.socket_path("/run/containerd//containerd.sock/", "default", "c1") == (
        f"/run/containerd/s/{want}"
    )
    assert len(address.to_address(address.socket_path("/a", "b", "c"))) < 108
    with pytest.raises(errors.InvalidArgument):
        address.socket_path("/a", "b", "")


def test_grouping() -> None:
    cfg = config.ShimConfig()
    pod = {"io.kubernetes.cri.sandbox-id": "sandbox1"}
    assert groups("c1", pod, cfg) == ["sandbox1"]
    explicit = {**pod, "io.containerd.runc.v2.group": "g"}
    assert groups("c1", explicit, cfg) == ["g"]
    assert groups("c1", {}, cfg)[:2] == ["kettle-pool-0", "kettle-pool-1"]
    cfg.grouping = "container"
    assert groups("c1", {}, cfg) == ["c1"]
    assert groups("c1", pod, cfg) == ["sandbox1"]


def test_address_file_is_written_atomically(tmp_path: Path) -> None:
    address.write_address_file(str(tmp_path), "unix:///run/containerd/s/abc")
    assert address.read_address_file(str(tmp_path)) == "unix:///run/containerd/s/abc"
    assert sorted(os.listdir(tmp_path)) == ["address"]
    assert address.from_address("unix:///x/y") == "/x/y"
    with pytest.raises(errors.InvalidArgument):
        address.from_address("/x/y")


def test_environment_settings() -> None:
    cfg = config.from_environment(
        {
            "KETTLE_SHIM_GROUPING": "container",
            "KETTLE_SHIM_POOL_SIZE": "8",
            "KETTLE_SHIM_LINGER": "2.5",
        }
    )
    assert (cfg.grouping, cfg.pool_size, cfg.linger) == ("container", 8, 2.5)
    with pytest.raises(errors.InvalidArgument, match="KETTLE_SHIM_POOL_SIZE"):
        config.from_environment({"KETTLE_SHIM_POOL_SIZE": "0"})
    with pytest.raises(errors.InvalidArgument, match="KETTLE_SHIM_GROUPING"):
        config.from_environment({"KETTLE_SHIM_GROUPING": "pod"})


def test_runc_options() -> None:
    cfg = config.ShimConfig()
    opts = runc_options_pb.Options(
        binary_name="runc", root="/run/x", systemd_cgroup=True, no_pivot_root=True, io_uid=5
    )
    config.apply_options(cfg, wkt.pack_any(opts))
    assert (cfg.binary_name, cfg.root, cfg.systemd_cgroup, cfg.no_pivot_root, cfg.io_uid) == (
        "runc",
        "/run/x",
        True,
        True,
        5,
    )
    assert cfg.runtime_root("k8s.io") == "/run/x/k8s.io"
    with pytest.raises(errors.Unimplemented, match="task_api_address"):
        config.apply_options(
            config.ShimConfig(), wkt.pack_any(runc_options_pb.Options(task_api_address="/x"))
        )


def test_default_runtime_roots() -> None:
    cfg = config.ShimConfig()
    assert cfg.runtime_root("default") == "/run/containerd/kettle/default"
    cfg.binary_name = "/usr/sbin/runc"
    assert cfg.runtime_root("default") == "/run/containerd/runc/default"


def test_toml_config_through_runtimeoptions(tmp_path: Path) -> None:
    path = tmp_path / "shim.toml"
    path.write_text(
        'BinaryName = "crun"\nGrouping = "container"\nPoolSize = 3\nLingerSeconds = 1\n'
        "NoNewKeyring = true\nIoGid = 7\n"
    )
    opts = wkt.pack_any(runtimeoptions_pb.Options(config_path=str(path)))
    cfg = config.ShimConfig()
    config.apply_options(cfg, opts)
    assert (cfg.binary_name, cfg.grouping, cfg.pool_size, cfg.linger) == (
        "crun",
        "container",
        3,
        1.0,
    )
    assert (cfg.no_new_keyring, cfg.io_gid) == (True, 7)
    # The same Any as `shim start` reads it from stdin.
    again = config.ShimConfig()
    config.apply_options(again, config.decode_stdin_options(opts.encode()))
    assert again.binary_name == "crun"
    assert config.decode_stdin_options(b"") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Bogus = 1\n", "Bogus: unknown option"),
        ("PoolSize = 0\n", "PoolSize: must be at least 1"),
        ('SystemdCgroup = "yes"\n', "must be true or false"),
        ("Grouping = 'pod'\n", "not one of pool, container"),
        ("IoUid = -1\n", "non-negative"),
        ("not toml", "runtime config"),
    ],
)
def test_bad_toml_config(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "shim.toml"
    path.write_text(text)
    with pytest.raises(errors.InvalidArgument, match=message):
        config.apply_toml(config.ShimConfig(), str(path))


def test_unknown_options_type_is_refused() -> None:
    other = any_pb.Any(type_url="io.example.Options", value=b"")
    with pytest.raises(errors.InvalidArgument, match=r"io\.example\.Options"):
        config.apply_options(config.ShimConfig(), other)
    with pytest.raises(errors.InvalidArgument, match=r"/nonexistent\.toml"):
        config.apply_toml(config.ShimConfig(), "/nonexistent.toml")


def test_config_round_trips_through_the_bundle_record(tmp_path: Path) -> None:
    cfg = config.ShimConfig()
    cfg.binary_name, cfg.root, cfg.systemd_cgroup, cfg.linger, cfg.io_uid = (
        "runc",
        "/r",
        True,
        1.5,
        3,
    )
    assert config.read_settings(str(tmp_path)) is None
    config.write_settings(str(tmp_path), cfg, "k8s.io")
    found = config.read_settings(str(tmp_path))
    assert found is not None
    back, namespace = found
    assert (back.to_json(), namespace) == (cfg.to_json(), "k8s.io")
    cfg.root = "/bad\npath"
    with pytest.raises(errors.InvalidArgument, match="newline"):
        config.write_settings(str(tmp_path), cfg, "x")


def test_create_request_options_are_what_start_saw() -> None:
    """containerd sends the same Any in CreateTaskRequest.options."""
    opts = wkt.pack_any(runc_options_pb.Options(binary_name="runc"))
    req = task_pb.CreateTaskRequest.decode(task_pb.CreateTaskRequest(id="x", options=opts).encode())
    cfg = config.ShimConfig()
    config.apply_options(cfg, req.options)
    assert cfg.binary_name == "runc"
