"""Images through kettled and kctl: pull with progress, images, tag, rmi, inspect, save/load,
prune, login/logout, against real registries.

The shared `kettled` serves what leaves its store as it was; what removes images (save, rmi,
load, prune) or needs a registry with authentication runs on a private kettled of this module."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.conftest import Image, Kettled
from tests.image.oci_fixture import PASSWORD, USER, Registry, free_port, write_registry_config

pytestmark = pytest.mark.privileged


def _uid() -> str:
    return uuid.uuid4().hex[:8]


def _one_line_error(res: subprocess.CompletedProcess[str], *words: str) -> str:
    assert res.returncode != 0, res.stdout
    text = res.stderr
    assert text.startswith("kctl: ") and text.count("\n") == 1, text
    for w in words:
        assert w in text, text
    return text


def _images(k: Kettled, *args: str) -> list[dict[str, Any]]:
    found = json.loads(k.ok("images", "--format", "json", *args))
    assert isinstance(found, list)
    return found


def _inspect(k: Kettled, ref: str) -> dict[str, Any]:
    [doc] = json.loads(k.ok("image", "inspect", ref))
    assert isinstance(doc, dict)
    return doc


def _htpasswd_line(user: str, password: str) -> str:
    out = subprocess.run(
        ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref(kettled: Kettled, image: Image) -> str:
    kettled.ok("pull", "-q", image.ref)
    return image.ref


@pytest.fixture(scope="module")
def auth_registry(daemon_tmp: Path, image: Image) -> Iterator[Registry]:
    """A plain-HTTP docker-registry with htpasswd basic auth, holding private/busybox."""
    if not os.path.exists("/usr/bin/htpasswd"):
        pytest.skip("htpasswd (apache2-utils) is not installed")
    d = daemon_tmp / f"auth-registry-{_uid()}"
    d.mkdir()
    (d / "htpasswd").write_text(_htpasswd_line(USER, PASSWORD) + "\n")
    port = free_port()
    config = d / "registry.yml"
    extra = f"auth:\n  htpasswd:\n    realm: kettle-test\n    path: {d}/htpasswd\n"
    write_registry_config(str(config), port, str(d / "storage"), extra)
    reg = Registry(f"127.0.0.1:{port}", port, str(d / "storage"), str(config))
    reg.start()
    try:
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
             "--dest-creds", f"{USER}:{PASSWORD}", f"docker://{image.ref}",
             f"docker://{reg.host}/private/busybox:latest"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield reg
    finally:
        reg.kill()


@pytest.fixture(scope="module")
def own(daemon_tmp: Path, image: Image, auth_registry: Registry) -> Iterator[Kettled]:
    """A kettled of this module's own, with an empty store; both registries plain HTTP."""
    k = Kettled(daemon_tmp / f"images-{_uid()}", image.registry)
    k.config.write_text(
        f'namespace = "{k.namespace}"\n[registry]\n'
        f'plain_http = ["{image.registry}", "{auth_registry.host}"]\n'
    )
    try:
        k.start()
        yield k
    finally:
        leaks = k.cleanup()
        if leaks:
            pytest.fail(f"left behind: {leaks}\n{k.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def saved(own: Kettled, image: Image, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kctl save of the busybox image (pulled into the private kettled)."""
    own.ok("pull", "-q", image.ref)
    path = tmp_path_factory.mktemp("save") / "busybox.tar"
    own.ok("save", "-o", str(path), image.ref)
    return path


def _variant(base: Path, dest: Path, tag: str, n: int) -> Path:
    """A docker-save archive of an image with base's layers and a config of its own (so a
    distinct image id), named `tag`."""
    members: dict[str, bytes] = {}
    with tarfile.open(base) as tf:
        for m in tf.getmembers():
            f = tf.extractfile(m)
            if f is not None:
                members[m.name] = f.read()
    [entry] = json.loads(members["manifest.json"])
    cfg = json.loads(members[entry["Config"]])
    cfg["config"]["Env"] = [*cfg["config"].get("Env", []), f"VARIANT={n}"]
    files = {
        "manifest.json": json.dumps(
            [{"Config": "config.json", "RepoTags": [tag], "Layers": entry["Layers"]}]
        ).encode(),
        "config.json": json.dumps(cfg).encode(),
        **{p: members[p] for p in entry["Layers"]},
    }
    with tarfile.open(dest, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return dest


# --- on the shared kettled --------------------------------------------------------------------


def test_images_table_json_quiet_and_digests(kettled: Kettled, ref: str) -> None:
    doc = _inspect(kettled, ref)
    short = doc["Id"].removeprefix("sha256:")[:12]
    lines = kettled.ok("images").splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    repo = ref.rpartition(":")[0]
    row = next(line.split() for line in lines[1:] if line.startswith(repo + " "))
    assert row[:3] == [repo, "latest", short]
    found = [i for i in _images(kettled) if i["name"] == ref]
    assert len(found) == 1
    assert (found[0]["repository"], found[0]["tag"], found[0]["id"]) == (repo, "latest", doc["Id"])
    assert found[0]["size"] > 0
    assert short in kettled.ok("images", "-q").split()
    digests = kettled.ok("images", "--digests", repo).splitlines()
    assert digests[0].split()[:3] == ["REPOSITORY", "TAG", "DIGEST"]
    assert digests[1].split()[2] == found[0]["digest"]
    assert kettled.ok("images", "-q", "nothing/here").strip() == ""


def test_inspect_shows_config_manifest_and_names(kettled: Kettled, ref: str) -> None:
    doc = _inspect(kettled, ref)
    assert doc["Id"].startswith("sha256:") and ref in doc["RepoTags"]
    assert doc["Config"]["Cmd"] == ["/bin/sh"]
    assert doc["Manifest"]["config"]["digest"] == doc["Id"]
    assert len(doc["RootFS"]["diff_ids"]) == len(doc["Manifest"]["layers"])
    assert doc["RepoDigests"][0].startswith(ref.rpartition(":")[0] + "@sha256:")
    res = kettled.kctl("image", "inspect", "kettle-test/nothere:v9")
    _one_line_error(res, "not found")
    assert json.loads(res.stdout) == []


def test_tag_then_run_by_the_new_name_then_rmi_untags(kettled: Kettled, ref: str) -> None:
    new = f"kettle-test/tagged-{_uid()}:v1"
    kettled.ok("tag", ref, new)
    full = f"docker.io/{new}"
    assert full in [i["name"] for i in _images(kettled)]
    res = kettled.kctl("run", "--rm", new, "echo", "tagged")
    assert (res.returncode, res.stdout) == (0, "tagged\n"), res.stderr
    assert "Unable to find image" not in res.stderr
    out = kettled.ok("rmi", new)
    assert out.splitlines() == [f"Untagged: {full}"]  # the image keeps its other name
    assert [i["name"] for i in _images(kettled) if i["name"] == ref] == [ref]
    _one_line_error(kettled.kctl("tag", "kettle-test/nothere:v1", new), "not found")
    _one_line_error(kettled.kctl("tag", ref, "Bad//Name"), "reference")


def test_rmi_by_id_with_several_names_is_refused(kettled: Kettled, ref: str) -> None:
    other = f"kettle-test/second-{_uid()}:v1"
    kettled.ok("tag", ref, other)
    try:
        image_id = _inspect(kettled, ref)["Id"]
        _one_line_error(kettled.kctl("rmi", image_id[7:19]), "several names", "force")
        assert ref in [i["name"] for i in _images(kettled)]
    finally:
        kettled.ok("rmi", other)


def test_dead_registry_and_bad_names_are_one_line(kettled: Kettled) -> None:
    dead = f"127.0.0.1:{free_port()}"
    _one_line_error(kettled.kctl("pull", f"{dead}/kettle-test/busybox:latest"), dead)
    bad = subprocess.run(
        [*_kctl(kettled), "login", "-u", "x", "--password-stdin", "bad!host:x"],
        input="pw\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    _one_line_error(bad, "server")
    _one_line_error(kettled.kctl("rmi", "kettle-test/nothere:latest"), "not found")
    _one_line_error(kettled.kctl("save", "-o", "/nonexistent-dir/x.tar", "busybox"), "")
    _one_line_error(kettled.kctl("load", "-i", "/nonexistent-file.tar"), "no such file")


def test_login_to_a_dead_registry_is_one_line(kettled: Kettled) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [*_kctl(kettled), "login", "-u", "x", "--password-stdin", dead],
        input="pw\n", capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    _one_line_error(proc, dead, "connection refused")


def _kctl(k: Kettled) -> list[str]:
    from tests.daemon.conftest import BIN

    return [str(BIN / "kctl"), "--address", k.address]


# --- on the module's own kettled ------------------------------------------------------------


def test_pull_shows_progress_per_layer(own: Kettled, image: Image) -> None:
    res = own.kctl("pull", image.ref)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{image.ref}\n"
    doc = _inspect(own, image.ref)
    layers = [d["digest"].removeprefix("sha256:")[:12] for d in doc["Manifest"]["layers"]]
    err = res.stderr.splitlines()
    assert err[0] == f"Pulling {image.ref}"
    for short in layers:
        states = [line.split(": ", 1)[1] for line in err if line.startswith(short + ": ")]
        assert states[0] == "Waiting" and states[-1] == "Pull complete", err
        assert any(s.startswith("Downloading ") for s in states), err
        assert "Verifying" in states, err
        assert len(states) == len(set(states)), f"a state printed twice: {err}"
    assert err[-2] == f"Digest: {doc['RepoDigests'][0].partition('@')[2]}"
    assert err[-1] == f"Status: Downloaded newer image for {image.ref}"
    again = own.kctl("pull", image.ref)
    assert again.returncode == 0, again.stderr
    assert f"{layers[0]}: Already exists" in again.stderr
    assert again.stderr.splitlines()[-1] == f"Status: Image is up to date for {image.ref}"
    quiet = own.kctl("pull", "-q", image.ref)
    assert (quiet.stdout, quiet.stderr) == (f"{image.ref}\n", "")


def test_save_rmi_load_run(own: Kettled, image: Image, saved: Path) -> None:
    with tarfile.open(saved) as tf:
        names = tf.getnames()
    assert "manifest.json" in names and "index.json" in names
    image_id = _inspect(own, image.ref)["Id"]
    out = own.ok("rmi", image.ref).splitlines()
    assert out == [f"Untagged: {image.ref}", f"Deleted: {image_id}"]
    assert image.ref not in [i["name"] for i in _images(own)]
    loaded = subprocess.run(
        [*_kctl(own), "load"], stdin=saved.open("rb"), capture_output=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.decode() == f"Loaded image: {image.ref}\n"
    assert _inspect(own, image.ref)["Id"] == image_id
    res = own.kctl("run", "--rm", image.ref, "echo", "loaded")
    assert (res.returncode, res.stdout) == (0, "loaded\n"), res.stderr
    # -i FILE too, over an image already there.
    assert own.ok("load", "-i", str(saved)) == f"Loaded image: {image.ref}\n"
    _one_line_error(own.kctl("load", "-i", "/etc/hostname"), "archive")


def test_save_is_readable_by_skopeo(saved: Path, own: Kettled, image: Image) -> None:
    doc = _inspect(own, image.ref)
    res = subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{saved}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    info = json.loads(res.stdout)
    assert len(info["Layers"]) == len(doc["Manifest"]["layers"])
    assert info["Env"] == doc["Config"]["Env"]
    raw = subprocess.run(
        ["skopeo", "inspect", "--config", "--raw", f"docker-archive:{saved}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert json.loads(raw.stdout)["rootfs"] == doc["RootFS"]


def test_save_refuses_a_terminal_and_streams_to_stdout(own: Kettled, image: Image) -> None:
    import pty

    main, tty = pty.openpty()
    try:
        res = subprocess.run(
            [*_kctl(own), "save", image.ref],
            stdout=tty, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(tty)
        os.close(main)
    assert res.returncode != 0 and "terminal" in res.stderr
    piped = subprocess.run([*_kctl(own), "save", image.ref], capture_output=True, timeout=60)
    assert piped.returncode == 0
    with tarfile.open(fileobj=io.BytesIO(piped.stdout)) as tf:
        assert "manifest.json" in tf.getnames()


def test_prune_and_rmi_in_use(own: Kettled, saved: Path, tmp_path: Path) -> None:
    repo = f"docker.io/kettle-test/prune-{_uid()}"

    def load(n: int, tag: str) -> str:
        path = _variant(saved, tmp_path / f"v{n}.tar", f"{repo}:{tag}", n)
        own.ok("load", "-i", str(path))
        return str(_inspect(own, f"{repo}:{tag}")["Id"])

    def ids() -> set[str]:
        return {i["id"] for i in _images(own, "-a")}

    v1 = load(1, "u1")
    v2 = load(2, "u1")  # u1 moves: v1 is left without a tag (dangling)
    v3 = load(3, "u2")
    c_dangling = f"p-{_uid()}"
    own.ok("create", "--name", c_dangling, f"{repo}:u2", "true")
    v4 = load(4, "u2")  # v3 dangling, but a container uses it
    v5 = load(5, "t")
    c_tagged = f"p-{_uid()}"
    own.ok("create", "--name", c_tagged, f"{repo}:t", "true")
    try:
        assert {v1, v2, v3, v4, v5} <= ids()
        none_rows = [i for i in _images(own) if i["repository"].endswith(repo[10:])]
        assert {i["id"] for i in none_rows if i["tag"] == "<none>"} == {v1, v3}
        # The last name of an image a container uses is refused, naming the container.
        _one_line_error(own.kctl("rmi", f"{repo}:t"), c_tagged, "in use")
        _one_line_error(own.kctl("rmi", v3[7:19]), c_dangling)

        out = own.ok("image", "prune", "-f")
        assert f"deleted: {v1}" in out and "Total reclaimed space:" in out
        after = ids()
        assert v1 not in after and {v2, v3, v4, v5} <= after

        out = own.ok("image", "prune", "-a", "-f")
        after = ids()
        assert {v2, v4}.isdisjoint(after) and {v3, v5} <= after, out
        reclaimed = out.splitlines()[-1]
        assert reclaimed.startswith("Total reclaimed space: ")
    finally:
        own.ok("rm", c_dangling, c_tagged)
    own.ok("image", "prune", "-a", "-f")
    assert not {v3, v5} & ids()


def test_login_logout_and_pull_with_credentials(own: Kettled, auth_registry: Registry) -> None:
    host = auth_registry.host
    private = f"{host}/private/busybox:latest"
    _one_line_error(own.kctl("pull", private), host)  # no credentials yet

    def login(password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_kctl(own), "login", "-u", USER, "--password-stdin", host],
            input=password + "\n", capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    _one_line_error(login("wrong-password"), host, "refused")
    creds = own.root / "auth.json"
    assert not creds.exists() or host not in creds.read_text()

    res = login(PASSWORD)
    assert (res.returncode, res.stdout) == (0, "Login Succeeded\n"), res.stderr
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert host in json.loads(creds.read_text())["auths"]
    assert own.ok("pull", "-q", private) == f"{private}\n"
    res = own.kctl("run", "--rm", private, "echo", "private")
    assert (res.returncode, res.stdout) == (0, "private\n"), res.stderr

    assert own.ok("logout", host) == f"Removing login credentials for {host}\n"
    assert host not in json.loads(creds.read_text())["auths"]
    assert own.ok("logout", host) == f"Not logged in to {host}\n"
    _one_line_error(own.kctl("pull", private), host)  # the credentials are really gone
    own.ok("rmi", private)
