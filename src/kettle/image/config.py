"""The image configuration (what a container of the image runs with), parsed and checked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kettle.errors import InvalidArgument
from kettle.image.digest import validate_digest
from kettle.image.manifest import MAX_MANIFEST_SIZE


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    retries: int = 0


@dataclass(frozen=True)
class ImageConfig:
    os: str
    architecture: str
    variant: str = ""
    diff_ids: tuple[str, ...] = ()
    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    healthcheck: Healthcheck | None = None
    created: str = ""
    author: str = ""


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what}: expected a list of strings")
    return tuple(value)


def _opt_strings(value: Any, what: str) -> tuple[str, ...] | None:
    return None if value is None else _strings(value, what)


def _string(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{what}: expected a string")
    return value


def _keys(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what}: expected an object")
    return tuple(sorted(str(k) for k in value))


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{what}: expected an integer")
    return value


def parse_config(body: bytes, what: str) -> ImageConfig:
    """Parse an OCI/Docker image config; InvalidArgument names the field at fault."""
    if len(body) > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"{what}: larger than {MAX_MANIFEST_SIZE} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{what}: not valid json ({exc})") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{what}: expected a json object")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise InvalidArgument(f"{what}: rootfs.type must be 'layers'")
    diff_ids = _strings(rootfs.get("diff_ids"), f"{what} rootfs.diff_ids")
    for d in diff_ids:
        try:
            validate_digest(d)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{what} rootfs.diff_ids: {exc}") from None
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise InvalidArgument(f"{what}: config must be an object")
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InvalidArgument(f"{what} config.Labels: expected an object of strings")
    health = None
    hc = cfg.get("Healthcheck")
    if hc is not None:
        if not isinstance(hc, dict):
            raise InvalidArgument(f"{what} config.Healthcheck: expected an object")
        health = Healthcheck(
            _strings(hc.get("Test") or [], f"{what} config.Healthcheck.Test"),
            _int(hc.get("Interval"), f"{what} config.Healthcheck.Interval"),
            _int(hc.get("Timeout"), f"{what} config.Healthcheck.Timeout"),
            _int(hc.get("StartPeriod"), f"{what} config.Healthcheck.StartPeriod"),
            _int(hc.get("Retries"), f"{what} config.Healthcheck.Retries"),
        )
    return ImageConfig(
        os=_string(doc.get("os"), f"{what} os"),
        architecture=_string(doc.get("architecture"), f"{what} architecture"),
        variant=_string(doc.get("variant"), f"{what} variant"),
        diff_ids=diff_ids,
        user=_string(cfg.get("User"), f"{what} config.User"),
        env=_strings(cfg.get("Env") or [], f"{what} config.Env"),
        entrypoint=_opt_strings(cfg.get("Entrypoint"), f"{what} config.Entrypoint"),
        cmd=_opt_strings(cfg.get("Cmd"), f"{what} config.Cmd"),
        working_dir=_string(cfg.get("WorkingDir"), f"{what} config.WorkingDir"),
        exposed_ports=_keys(cfg.get("ExposedPorts"), f"{what} config.ExposedPorts"),
        volumes=_keys(cfg.get("Volumes"), f"{what} config.Volumes"),
        labels={str(k): v for k, v in labels.items()},
        stop_signal=_string(cfg.get("StopSignal"), f"{what} config.StopSignal"),
        healthcheck=health,
        created=_string(doc.get("created"), f"{what} created"),
        author=_string(doc.get("author"), f"{what} author"),
    )
