"""Parsing OCI/Docker manifests and indexes, and choosing the manifest for a platform."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kettle.errors import FailedPrecondition, InvalidArgument, NotFound, Unimplemented
from kettle.image import mediatypes as mt
from kettle.image.digest import validate_digest
from kettle.image.platform import Platform, normalize, rank

#: manifests and configs larger than this are refused before parsing (containerd uses 4 MiB too).
MAX_MANIFEST_SIZE = 4 << 20


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            plat: dict[str, str] = {
                "os": self.platform.os,
                "architecture": self.platform.architecture,
            }
            if self.platform.variant:
                plat["variant"] = self.platform.variant
            out["platform"] = plat
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: expected a json object")
    return value


def parse_descriptor(value: Any, what: str) -> Descriptor:
    d = _obj(value, what)
    media_type = d.get("mediaType")
    digest = d.get("digest")
    size = d.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidArgument(f"{what}: mediaType missing")
    if not isinstance(digest, str):
        raise InvalidArgument(f"{what}: digest missing")
    try:
        validate_digest(digest)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{what}: {exc}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidArgument(f"{what}: size must be a non-negative integer")
    plat = None
    p = d.get("platform")
    if p is not None:
        p = _obj(p, f"{what}.platform")
        os_, arch = p.get("os"), p.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            raise InvalidArgument(f"{what}.platform: os and architecture must be strings")
        variant = p.get("variant", "")
        plat = Platform(os_, arch, variant if isinstance(variant, str) else "")
    urls = d.get("urls") or []
    annotations = d.get("annotations") or {}
    if not isinstance(urls, list) or not isinstance(annotations, dict):
        raise InvalidArgument(f"{what}: urls/annotations malformed")
    return Descriptor(
        media_type,
        digest,
        size,
        plat,
        tuple(str(u) for u in urls),
        {str(k): str(v) for k, v in annotations.items()},
    )


def _load(body: bytes, what: str) -> dict[str, Any]:
    if len(body) > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"{what}: larger than {MAX_MANIFEST_SIZE} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{what}: not valid json ({exc})") from None
    return _obj(doc, what)


def detect_media_type(body: bytes, header_type: str, what: str) -> str:
    """The media type of a manifest body: its own mediaType field, else the HTTP Content-Type."""
    doc = _load(body, what)
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return mt.DOCKER_SCHEMA1
    if "manifests" in doc:
        return mt.OCI_INDEX
    if "config" in doc and "layers" in doc:
        return mt.OCI_MANIFEST
    return header_type.split(";")[0].strip()


def reject_schema1(media_type: str, what: str) -> None:
    if media_type in mt.SCHEMA1:
        raise Unimplemented(
            f"{what}: docker schema 1 manifests are not supported; push the image again with a"
            " current client"
        )


def parse_manifest(body: bytes, media_type: str, what: str) -> Manifest:
    reject_schema1(media_type, what)
    if media_type not in mt.MANIFESTS:
        raise InvalidArgument(f"{what}: media type {media_type!r} is not an image manifest")
    doc = _load(body, what)
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument(f"{what}: schemaVersion must be 2")
    config = parse_descriptor(doc.get("config"), f"{what} config")
    if config.media_type not in mt.CONFIGS:
        raise Unimplemented(
            f"{what}: config media type {config.media_type!r} is not a container image"
            " (an artifact?)"
        )
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise InvalidArgument(f"{what}: layers must be a list")
    layers = tuple(parse_descriptor(item, f"{what} layer {i}") for i, item in enumerate(raw_layers))
    for layer in layers:
        if layer.media_type in mt.FOREIGN_LAYERS:
            raise Unimplemented(
                f"{what}: layer {layer.digest} is a foreign (non-distributable) layer"
            )
        if layer.media_type not in mt.LAYERS:
            raise Unimplemented(f"{what}: layer {layer.digest} has media type {layer.media_type!r}")
    return Manifest(media_type, config, layers)


def parse_index(body: bytes, media_type: str, what: str) -> Index:
    if media_type not in mt.INDEXES:
        raise InvalidArgument(f"{what}: media type {media_type!r} is not an index")
    doc = _load(body, what)
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument(f"{what}: schemaVersion must be 2")
    raw = doc.get("manifests")
    if not isinstance(raw, list):
        raise InvalidArgument(f"{what}: manifests must be a list")
    return Index(
        media_type,
        tuple(parse_descriptor(item, f"{what} manifest {i}") for i, item in enumerate(raw)),
    )


def _is_attestation(d: Descriptor) -> bool:
    if d.annotations.get("vnd.docker.reference.type") == "attestation-manifest":
        return True
    return d.platform is not None and d.platform.os == "unknown"


def select_manifest(index: Index, wanted: Platform, what: str) -> Descriptor:
    """The best manifest of ``index`` for ``wanted``; NotFound lists what the index offers."""
    best: tuple[int, int, Descriptor] | None = None
    offered: list[str] = []
    for position, d in enumerate(index.manifests):
        if _is_attestation(d):
            continue
        if d.media_type in mt.SCHEMA1:
            continue
        if d.media_type not in mt.MANIFESTS and d.media_type not in mt.INDEXES:
            continue
        if d.platform is None:
            continue
        offered.append(str(normalize(d.platform)))
        r = rank(wanted, d.platform)
        if r is not None and (best is None or (r, position) < best[:2]):
            best = (r, position, d)
    if best is None:
        shown = ", ".join(sorted(set(offered))) or "none"
        raise NotFound(f"{what}: no manifest for platform {wanted} (offered: {shown})")
    return best[2]


def check_config_platform(os_: str, arch: str, variant: str, wanted: Platform, what: str) -> None:
    """A single-manifest image must still be for the wanted platform."""
    if rank(wanted, Platform(os_, arch, variant)) is None:
        got = normalize(Platform(os_, arch, variant))
        raise FailedPrecondition(f"{what}: image is for {got}, not {wanted}")
