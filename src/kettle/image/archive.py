"""Offline images: import and export of OCI image layout tarballs and ``docker save`` archives.

Import reads the archive once, as a stream: every file lands in the content store (verified
against its digest when its name carries one), small JSON files are kept in memory, and the
images are then assembled from them.  Nothing is extracted to a path.  Export writes an OCI
layout with a Docker ``manifest.json`` beside it, which both ``docker load`` and OCI tools read.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from typing import TYPE_CHECKING, Any, BinaryIO

from kettle.errors import InvalidArgument, NotFound
from kettle.image import mediatypes as mt
from kettle.image.config import parse_config
from kettle.image.decompress import sniff
from kettle.image.digest import sha256_digest, validate_digest
from kettle.image.manifest import (
    Descriptor,
    detect_media_type,
    parse_descriptor,
    parse_index,
    parse_manifest,
    select_manifest,
)
from kettle.image.metadata import ImageRecord
from kettle.image.platform import Platform
from kettle.image.reference import parse_reference

if TYPE_CHECKING:
    from kettle.image.service import ImageService

_SMALL = 4 << 20
_NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    name = posixpath.normpath(name)
    if name.startswith("/") or name == ".." or name.startswith("../"):
        raise InvalidArgument(f"archive entry {name!r} is outside the archive")
    return name


def import_archive(
    svc: ImageService, source: str | BinaryIO, name: str | None, platform: Platform
) -> list[ImageRecord]:
    small: dict[str, bytes] = {}
    files: dict[str, str] = {}  # archive path -> blob digest
    links: dict[str, str] = {}
    f: BinaryIO = open(source, "rb") if isinstance(source, str) else source  # noqa: SIM115
    try:
        with tarfile.open(fileobj=f, mode="r|*") as tf:
            for member in tf:
                path = _clean(member.name)
                if member.issym() or member.islnk():
                    base = posixpath.dirname(path) if member.issym() else ""
                    links[path] = _clean(posixpath.join(base, member.linkname))
                    continue
                if not member.isfile():
                    continue
                reader = tf.extractfile(member)
                assert reader is not None
                parts = path.split("/")
                if len(parts) == 3 and parts[0] == "blobs":
                    digest = f"{parts[1]}:{parts[2]}"
                    validate_digest(digest)
                    if not svc.content.has(digest, member.size):
                        ing = svc.content.ingest(digest, member.size)
                        try:
                            ing.open()
                            if ing.offset:
                                ing.discard()
                                ing.open()
                            while chunk := reader.read(1 << 20):
                                ing.write(chunk)
                            ing.commit()
                        finally:
                            ing.close()
                    files[path] = digest
                    if member.size <= _SMALL:
                        small[path] = svc.content.read(digest, _SMALL)
                elif member.size <= _SMALL and path.endswith(
                    ("json", "oci-layout", "repositories")
                ):
                    small[path] = reader.read()
                else:
                    files[path] = svc.content.write_stream(reader, member.size)  # type: ignore[arg-type]
    except tarfile.TarError as exc:
        raise InvalidArgument(f"import: not a readable archive ({exc})") from None
    finally:
        if isinstance(source, str):
            f.close()
    for path, target in links.items():
        if target in files:
            files[path] = files[target]
    if "index.json" in small:
        return _import_oci(svc, small, name, platform)
    if "manifest.json" in small:
        return _import_docker(svc, small, files, name)
    raise InvalidArgument("import: archive has neither index.json nor manifest.json")


def _image_name(annotations: dict[str, str], fallback: str | None, what: str) -> str:
    for key in _NAME_ANNOTATIONS:
        value = annotations.get(key)
        if not value:
            continue
        if key == "org.opencontainers.image.ref.name" and ("/" not in value and ":" not in value):
            if fallback is None:
                continue
            base = parse_reference(fallback)
            return str(parse_reference(f"{base.name}:{value}"))
        return str(parse_reference(value))
    if fallback is None:
        raise InvalidArgument(f"{what}: no image name in the archive; give one")
    return str(parse_reference(fallback))


def _import_oci(
    svc: ImageService, small: dict[str, bytes], name: str | None, platform: Platform
) -> list[ImageRecord]:
    what = "import index.json"
    index = parse_index(small["index.json"], detect_media_type(small["index.json"], "", what), what)
    out = []
    for desc in index.manifests:
        target = desc
        body = svc.content.read(desc.digest)
        media_type = desc.media_type
        mdesc = desc
        if media_type in mt.INDEXES:
            sub = parse_index(body, media_type, f"import {desc.digest}")
            mdesc = select_manifest(sub, platform, f"import {desc.digest}")
            body = svc.content.read(mdesc.digest)
        out.append(_assemble(svc, _image_name(desc.annotations, name, what), target, mdesc, body))
    return out


def _assemble(
    svc: ImageService, name: str, target: Descriptor, mdesc: Descriptor, body: bytes
) -> ImageRecord:
    what = f"import {name}"
    manifest = parse_manifest(body, detect_media_type(body, mdesc.media_type, what), what)
    config = parse_config(svc.content.read(manifest.config.digest), f"{what} config")
    chain = svc.puller.unpack_local(manifest, config, what)
    return ImageRecord(
        name=name,
        target=target.digest,
        target_media_type=target.media_type,
        manifest=mdesc.digest,
        config=manifest.config.digest,
        chain_id=chain[-1] if chain else None,
        platform=str(Platform(config.os, config.architecture, config.variant)),
        size=sum(d.size for d in manifest.layers),
        created=0.0,
        updated=0.0,
    )


def _import_docker(
    svc: ImageService, small: dict[str, bytes], files: dict[str, str], name: str | None
) -> list[ImageRecord]:
    what = "import manifest.json"
    try:
        entries = json.loads(small["manifest.json"])
    except ValueError:
        raise InvalidArgument(f"{what}: not valid json") from None
    if not isinstance(entries, list):
        raise InvalidArgument(f"{what}: expected a list")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidArgument(f"{what}[{i}]: expected an object")
        cpath = _clean(str(entry.get("Config", "")))
        cbody = small.get(cpath)
        if cbody is None:
            raise NotFound(f"{what}[{i}]: config {cpath} not in the archive")
        cdigest = sha256_digest(cbody)
        svc.content.write(cdigest, cbody)
        layers = []
        for lp in entry.get("Layers") or []:
            lpath = _clean(str(lp))
            digest = files.get(lpath)
            if digest is None:
                raise NotFound(f"{what}[{i}]: layer {lpath} not in the archive")
            size = svc.content.size(digest) or 0
            with svc.content.open(digest) as fh:
                head = fh.read(4)
            kind = sniff(head)
            media_type = {
                "gzip": mt.DOCKER_LAYER_GZIP,
                "zstd": mt.DOCKER_LAYER_ZSTD,
                "": mt.DOCKER_LAYER,
            }[kind]
            layers.append({"mediaType": media_type, "digest": digest, "size": size})
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": cdigest, "size": len(cbody)},
            "layers": layers,
        }
        mbody = json.dumps(manifest, separators=(",", ":")).encode()
        mdigest = sha256_digest(mbody)
        svc.content.write(mdigest, mbody)
        mdesc = parse_descriptor(
            {"mediaType": mt.DOCKER_MANIFEST, "digest": mdigest, "size": len(mbody)}, what
        )
        tags = entry.get("RepoTags") or []
        names = [str(parse_reference(t)) for t in tags] or [_image_name({}, name, what)]
        for n in names:
            out.append(_assemble(svc, n, mdesc, mdesc, mbody))
    return out


def _add(
    tf: tarfile.TarFile,
    path: str,
    data: bytes | None = None,
    src: BinaryIO | None = None,
    size: int = 0,
) -> None:
    info = tarfile.TarInfo(path)
    info.mode = 0o644
    info.mtime = 0
    if data is not None:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        info.size = size
        tf.addfile(info, src)


def export_archive(svc: ImageService, recs: list[ImageRecord], dest: str | BinaryIO) -> None:
    f: BinaryIO = open(dest, "wb") if isinstance(dest, str) else dest  # noqa: SIM115
    try:
        with tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            written: set[str] = set()
            index: list[dict[str, Any]] = []
            docker: list[dict[str, Any]] = []

            def blob(digest: str) -> str:
                alg, hexd = validate_digest(digest)
                path = f"blobs/{alg}/{hexd}"
                if digest not in written:
                    size = svc.content.size(digest)
                    if size is None:
                        raise NotFound(f"export: blob {digest} not in the store")
                    with svc.content.open(digest) as src:
                        _add(tf, path, src=src, size=size)
                    written.add(digest)
                return path

            _add(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            for rec in recs:
                what = f"export {rec.name}"
                body = svc.content.read(rec.manifest)
                media_type = detect_media_type(body, "", what)
                manifest = parse_manifest(body, media_type, what)
                layer_paths = [blob(d.digest) for d in manifest.layers]
                config_path = blob(rec.config)
                blob(rec.manifest)
                ref = parse_reference(rec.name)
                annotations = {"io.containerd.image.name": rec.name}
                if ref.tag:
                    annotations["org.opencontainers.image.ref.name"] = ref.tag
                index.append(
                    {
                        "mediaType": media_type,
                        "digest": rec.manifest,
                        "size": len(body),
                        "annotations": annotations,
                    }
                )
                docker.append(
                    {
                        "Config": config_path,
                        "RepoTags": [ref.familiar()] if ref.tag and not ref.digest else [],
                        "Layers": layer_paths,
                    }
                )
            doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": index}
            _add(tf, "index.json", json.dumps(doc).encode())
            _add(tf, "manifest.json", json.dumps(docker).encode())
    finally:
        if isinstance(dest, str):
            f.close()
