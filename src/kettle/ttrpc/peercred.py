"""Peer credentials of a unix socket connection (SO_PEERCRED) and the default policy."""

from __future__ import annotations

import os
import socket
import struct

_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


class PeerCred:
    """pid, uid and gid of the process that connected (as of its connect())."""

    __slots__ = ("gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int) -> None:
        self.pid = pid
        self.uid = uid
        self.gid = gid

    def __repr__(self) -> str:
        return f"PeerCred(pid={self.pid}, uid={self.uid}, gid={self.gid})"


def peer_credentials(sock: socket.socket) -> PeerCred:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCred(pid, uid, gid)


def same_user_or_root(cred: PeerCred) -> bool:
    """Default server policy: the server's own effective uid, or root (containerd runs as
    root; a rootless containerd runs as the same user as its shims)."""
    return cred.uid == 0 or cred.uid == os.geteuid()


def allow_any(cred: PeerCred) -> bool:
    """Policy that accepts every peer; filesystem permissions on the socket are the guard."""
    return True
