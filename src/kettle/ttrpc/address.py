"""Unix socket addresses as containerd writes them."""

from __future__ import annotations

from kettle.errors import InvalidArgument


def socket_address(address: str) -> str:
    """The name to bind()/connect() for an address.

    `unix:///path` and `/path` are filesystem sockets; `@name` or `\\0name` is a socket in the
    abstract namespace.  (containerd's own dialer treats a shim address without `unix://` as
    abstract; callers that follow that convention prefix `@` themselves.)
    """
    if address.startswith("unix://"):
        address = address[len("unix://") :]
    elif address.startswith("@"):
        address = "\0" + address[1:]
    if not address or address == "\0":
        raise InvalidArgument(f"ttrpc: empty socket address {address!r}")
    return address


def is_abstract(name: str) -> bool:
    return name.startswith("\0")
