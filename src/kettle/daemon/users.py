"""User names resolved through the image's /etc/passwd and /etc/group, as Docker does.

The files are read from the container's snapshot directories (the overlay's upper, then its
lower layers, top first) before the container exists, so its rootfs never has to be mounted
in kettled.  Each path component is opened with O_NOFOLLOW from the layer's directory: a
hostile image's symlink (/etc -> /host/etc) can not make kettled read a host file."""

from __future__ import annotations

import os
import stat

from kettle.errors import InvalidArgument, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kettle.snapshot.mounts import Mount

_MAX_BYTES = 4 << 20


def layer_dirs(mounts: list[Mount]) -> list[str]:
    """The directories making up the rootfs, the one that wins first."""
    dirs: list[str] = []
    for m in mounts:
        if m.type == "bind":
            dirs.append(m.source)
            continue
        opts = dict(o.partition("=")[::2] for o in m.options)
        if opts.get("upperdir"):
            dirs.append(opts["upperdir"])
        dirs += [d for d in opts.get("lowerdir", "").split(":") if d]
    return dirs


def _read_in(layer: str, rel: str) -> str | None:
    """The file's text in this layer; "" when the layer deletes it (a whiteout); None when
    the layer does not have it."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(layer, flags | os.O_DIRECTORY)
    try:
        for part in rel.split("/"):
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return ""
            if stat.S_ISLNK(st.st_mode):
                raise InvalidArgument(f"image /{rel}: a symlink; refusing to follow it")
            nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidArgument(f"image /{rel}: not a plain file")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(_MAX_BYTES).decode("utf-8", "replace")
    finally:
        os.close(fd)


def read_file(dirs: list[str], rel: str) -> str:
    for d in dirs:
        text = _read_in(d, rel)
        if text is not None:
            return text
    return ""


def _entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve(user: str, dirs: list[str]) -> dict[str, object]:
    """The OCI process.user for `name|uid[:group|gid]` (empty: root)."""
    name, _, group = user.partition(":")
    passwd = _entries(read_file(dirs, "etc/passwd")) if name and not _numeric(name, group) else []
    uid, gid = 0, 0
    login = ""
    if name.isdigit():
        uid = int(name)
        for e in passwd:
            if len(e) > 3 and e[2] == name and e[3].isdigit():
                gid, login = int(e[3]), e[0]
                break
    elif name:
        for e in passwd:
            if len(e) > 3 and e[0] == name and e[2].isdigit() and e[3].isdigit():
                uid, gid, login = int(e[2]), int(e[3]), name
                break
        else:
            raise NotFound(f"user {name!r}: no such user in the image's /etc/passwd")
    need_groups = (group and not group.isdigit()) or login
    groups = _entries(read_file(dirs, "etc/group")) if need_groups else []
    if group.isdigit():
        gid = int(group)
    elif group:
        for e in groups:
            if len(e) > 2 and e[0] == group and e[2].isdigit():
                gid = int(e[2])
                break
        else:
            raise NotFound(f"group {group!r}: no such group in the image's /etc/group")
    extra = sorted(
        {
            int(e[2])
            for e in groups
            if login and len(e) > 3 and e[2].isdigit() and login in e[3].split(",")
        }
        - {gid}
    )
    out: dict[str, object] = {"uid": uid, "gid": gid}
    if extra:
        out["additionalGids"] = extra
    return out


def _numeric(name: str, group: str) -> bool:
    # uid:gid needs no lookup at all; a lone uid still looks for its passwd entry (its gid).
    return name.isdigit() and group.isdigit()
