"""Where a shim listens, and which containers share one shim.

containerd derives nothing itself: ``shim start`` prints an address and writes it to the
bundle's ``address`` file; containerd dials it (and reads the file again after a restart).
The Go shims put the socket at ``/run/containerd/s/<sha256(<address>/<ns>/<group>)>``; Kettle
does the same so the paths look familiar and stay under the 108-byte sun_path limit.
"""

from __future__ import annotations

import os
import posixpath

from kettle.errors import InvalidArgument

SOCKET_DIR = "/run/containerd/s"

#: CRI puts this on every container of a pod (the sandbox itself included).
SANDBOX_ANNOTATION = "io.kubernetes.cri.sandbox-id"
#: The runc shim's explicit grouping annotation; honoured for compatibility.
GROUP_ANNOTATIONS = ("io.containerd.kettle.v2.group", "io.containerd.runc.v2.group")


def _sha256_hex(data: bytes) -> str:
    # The builtin module is much cheaper to import than hashlib (which loads OpenSSL), and
    # `shim start` runs once per container.
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python 3.12 renamed it
        try:
            from _sha2 import sha256  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            from hashlib import sha256
    return str(sha256(data).hexdigest())


def socket_path(containerd_address: str, namespace: str, group: str) -> str:
    """The socket path for a shim group, as Go's filepath.Join + sha256 compute it."""
    if not group:
        raise InvalidArgument("shim: empty group id")
    joined = posixpath.normpath(posixpath.join(containerd_address, namespace, group))
    return posixpath.join(SOCKET_DIR, _sha256_hex(joined.encode()))


def to_address(path: str) -> str:
    return "unix://" + path


def from_address(address: str) -> str:
    """The filesystem path of a `unix://` address (anything else is refused: containerd
    treats an address without the scheme as an abstract socket, which Kettle never uses)."""
    if not address.startswith("unix://"):
        raise InvalidArgument(f"shim: address {address!r} is not a unix:// socket")
    return address[len("unix://") :]


def annotated_group(annotations: dict[str, str]) -> str | None:
    """The group a container asks for by annotation: explicit first, then its pod."""
    for key in GROUP_ANNOTATIONS:
        if annotations.get(key):
            return annotations[key]
    return annotations.get(SANDBOX_ANNOTATION) or None


def write_address_file(bundle: str, address: str) -> None:
    """Atomically write `<bundle>/address` (containerd reads it after a restart)."""
    tmp = posixpath.join(bundle, ".address")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, address.encode())
    finally:
        os.close(fd)
    os.replace(tmp, posixpath.join(bundle, "address"))


def read_address_file(bundle: str) -> str:
    with open(posixpath.join(bundle, "address")) as f:
        return f.read().strip()
