"""Content digests: validation, hashing and chain ids."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from kettle.errors import InvalidArgument

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")


def validate_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a digest string; InvalidArgument when malformed or unsupported."""
    m = _DIGEST.match(digest)
    if not m:
        raise InvalidArgument(f"invalid digest {digest!r}")
    algorithm, encoded = m.group(1), m.group(2)
    length = _ALGORITHMS.get(algorithm)
    if length is None:
        raise InvalidArgument(f"unsupported digest algorithm in {digest!r}")
    if len(encoded) != length or any(c not in "0123456789abcdef" for c in encoded):
        raise InvalidArgument(f"invalid digest {digest!r}: expected {length} lowercase hex")
    return algorithm, encoded


def hasher(digest: str) -> hashlib._Hash:
    """A fresh hash object of the digest's algorithm."""
    algorithm, _ = validate_digest(digest)
    return hashlib.new(algorithm)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The OCI chain id of each layer prefix: sha256(ChainID(n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for diff_id in diff_ids:
        validate_digest(diff_id)
        if not out:
            out.append(diff_id)
        else:
            out.append(sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out
