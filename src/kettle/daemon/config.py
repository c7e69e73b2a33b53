"""kettled's configuration: /etc/kettle/kettled.toml, then the command line.

Every key is known here; an unknown key or a value of the wrong type is refused by name, so a
typo never passes silently."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from kettle.errors import InvalidArgument

DEFAULT_CONFIG = "/etc/kettle/kettled.toml"
DEFAULT_ROOT = "/var/lib/kettle"
DEFAULT_STATE = "/run/kettle"
DEFAULT_ADDRESS = "/run/kettle/kettle.sock"


@dataclass
class RestartDefaults:
    """Back-off of restart policies (Kubernetes' numbers)."""

    initial_delay_s: float = 1.0
    max_delay_s: float = 300.0
    multiplier: float = 2.0
    reset_after_s: float = 600.0


@dataclass
class Config:
    root: str = DEFAULT_ROOT
    state: str = DEFAULT_STATE
    address: str = DEFAULT_ADDRESS
    #: the shim namespace (containerd's); several kettleds on one host need their own.
    namespace: str = "kettle"
    log_level: str = "info"
    #: OCI runtime the shims use: "" (kettle's own, in-process) or a runc-compatible binary.
    runtime: str = ""
    plain_http: list[str] = field(default_factory=list)
    #: registry host -> mirror endpoints tried first ("http://host:port" or "https://...").
    mirrors: dict[str, list[str]] = field(default_factory=dict)
    #: certs.d-style directories for registry TLS (empty: the image service's defaults).
    certs_dirs: list[str] = field(default_factory=list)
    #: container log rotation defaults (--log-opt overrides them per container).
    log_max_size: str = "10m"
    log_max_file: int = 3
    restart: RestartDefaults = field(default_factory=RestartDefaults)
    #: TCP listener ("host:port"; empty: none); always with mutual TLS.
    tcp_address: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""


def _duration(path: str, key: str, value: Any) -> float:
    """Seconds from a number or "1.5s", "300ms", "5m", "1h"."""
    if isinstance(value, bool):
        raise InvalidArgument(f"config {path}: {key}: a duration, not {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
            if value.endswith(suffix):
                try:
                    return float(value[: -len(suffix)]) * scale
                except ValueError:
                    break
    raise InvalidArgument(f"config {path}: {key}: bad duration {value!r} (like 1s, 500ms, 5m)")


def _str(path: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"config {path}: {key}: a string, not {value!r}")
    return value


def _strs(path: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"config {path}: {key}: a list of strings")
    return list(value)


def _table(path: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"config {path}: {key}: a table")
    return value


def apply(cfg: Config, data: dict[str, Any], path: str) -> None:
    for key, value in data.items():
        if key in ("root", "state", "address", "namespace", "log_level", "runtime"):
            setattr(cfg, key, _str(path, key, value))
        elif key == "registry":
            for rkey, rvalue in _table(path, key, value).items():
                name = f"registry.{rkey}"
                if rkey == "plain_http":
                    cfg.plain_http = _strs(path, name, rvalue)
                elif rkey == "certs_dirs":
                    cfg.certs_dirs = _strs(path, name, rvalue)
                elif rkey == "mirrors":
                    cfg.mirrors = {
                        str(h): _strs(path, f"{name}.{h}", m)
                        for h, m in _table(path, name, rvalue).items()
                    }
                else:
                    raise InvalidArgument(f"config {path}: unsupported key {name}")
        elif key == "logs":
            for lkey, lvalue in _table(path, key, value).items():
                if lkey == "max_size":
                    from kettle.daemon.logs import parse_size

                    cfg.log_max_size = _str(path, "logs.max_size", lvalue)
                    parse_size(cfg.log_max_size, f"config {path}: logs.max_size")
                elif lkey == "max_file" and isinstance(lvalue, int) and lvalue >= 1:
                    cfg.log_max_file = lvalue
                else:
                    raise InvalidArgument(f"config {path}: bad or unsupported key logs.{lkey}")
        elif key == "restart":
            r = cfg.restart
            for rkey, rvalue in _table(path, key, value).items():
                name = f"restart.{rkey}"
                if rkey == "initial_delay":
                    r.initial_delay_s = _duration(path, name, rvalue)
                elif rkey == "max_delay":
                    r.max_delay_s = _duration(path, name, rvalue)
                elif rkey == "reset_after":
                    r.reset_after_s = _duration(path, name, rvalue)
                elif rkey == "multiplier" and isinstance(rvalue, int | float) and rvalue >= 1:
                    r.multiplier = float(rvalue)
                else:
                    raise InvalidArgument(f"config {path}: bad or unsupported key {name}")
        elif key == "tcp":
            for tkey, tvalue in _table(path, key, value).items():
                if tkey not in ("address", "tls_cert", "tls_key", "tls_ca"):
                    raise InvalidArgument(f"config {path}: unsupported key tcp.{tkey}")
                attr = "tcp_address" if tkey == "address" else tkey
                setattr(cfg, attr, _str(path, f"tcp.{tkey}", tvalue))
        else:
            raise InvalidArgument(f"config {path}: unsupported key {key}")
    if cfg.tcp_address and not (cfg.tls_cert and cfg.tls_key and cfg.tls_ca):
        raise InvalidArgument(
            f"config {path}: tcp.address needs tcp.tls_cert, tcp.tls_key and tcp.tls_ca "
            "(kettled listens on TCP only with mutual TLS)"
        )


def load(path: str, required: bool) -> Config:
    import tomllib

    cfg = Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise InvalidArgument(f"config {path}: not found") from None
        return cfg
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"config {path}: {e}") from None
    apply(cfg, data, path)
    for key in ("root", "state", "address"):
        setattr(cfg, key, os.path.abspath(getattr(cfg, key)))
    return cfg
