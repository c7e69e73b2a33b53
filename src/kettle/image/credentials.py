"""Registry credentials: Kettle's own file (mode 0600 enforced) and Docker's config.json.

Both use Docker's format: ``{"auths": {"host": {"auth": base64("user:pass")}}}`` (or separate
``username``/``password``, or ``identitytoken``).  Docker's ``credHelpers``/``credsStore`` are
honoured by running ``docker-credential-<name> get``.  Kettle's file is looked at first.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass

from kettle.errors import InvalidArgument, PermissionDenied

_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")
_HUB_KEY = "https://index.docker.io/v1/"


@dataclass(frozen=True)
class Credential:
    username: str = ""
    password: str = ""
    #: an OAuth2 refresh token (Docker's "identitytoken"), exchanged at the token endpoint.
    identity_token: str = ""


def default_kettle_file() -> str:
    if os.geteuid() == 0:
        return "/etc/kettle/auth.json"
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "kettle", "auth.json")


def default_docker_config() -> str:
    base = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    return os.path.join(base, "config.json")


def _host_of(key: str) -> str:
    """Docker's config keys may be URLs (``https://host/v1/``): keep host[:port]."""
    if "://" in key:
        key = key.split("://", 1)[1]
    host = key.split("/", 1)[0]
    return "docker.io" if host in _HUB_ALIASES else host


def _decode(entry: object, where: str) -> Credential | None:
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{where}: entry must be an object")
    token = entry.get("identitytoken") or ""
    user = entry.get("username") or ""
    password = entry.get("password") or ""
    auth = entry.get("auth")
    if auth:
        try:
            raw = base64.b64decode(str(auth), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument(f"{where}: 'auth' is not base64 of user:password") from None
        user, sep, password = raw.partition(":")
        if not sep:
            raise InvalidArgument(f"{where}: 'auth' is not base64 of user:password")
    if not (user or token):
        return None
    return Credential(str(user), str(password), str(token))


class CredentialStore:
    def __init__(
        self,
        kettle_file: str | None = None,
        docker_config: str | None = None,
        *,
        use_docker: bool = True,
    ) -> None:
        self.kettle_file = kettle_file or default_kettle_file()
        self.docker_config = docker_config or default_docker_config()
        self.use_docker = use_docker

    def _load(self, path: str, strict_mode: bool) -> dict[str, object]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise PermissionDenied(
                f"credential file {path}: {os.strerror(exc.errno or 0).lower()}"
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if strict_mode:
                if st.st_mode & 0o077:
                    raise PermissionDenied(
                        f"credential file {path} has mode {stat.S_IMODE(st.st_mode):04o};"
                        " it must not be readable by others (chmod 600)"
                    )
                if st.st_uid != os.geteuid():
                    raise PermissionDenied(f"credential file {path} is not owned by this user")
            try:
                doc = json.load(f)
            except ValueError as exc:
                raise InvalidArgument(f"credential file {path}: not valid json ({exc})") from None
        if not isinstance(doc, dict):
            raise InvalidArgument(f"credential file {path}: expected a json object")
        return doc

    def get(self, registry: str) -> Credential | None:
        """Credentials for a registry host (``docker.io`` for Docker Hub), or None."""
        host = _host_of(registry)
        for path, strict in ((self.kettle_file, True), (self.docker_config, False)):
            if path == self.docker_config and not self.use_docker:
                continue
            doc = self._load(path, strict)
            auths = doc.get("auths") or {}
            if not isinstance(auths, dict):
                raise InvalidArgument(f"credential file {path}: 'auths' must be an object")
            for key, entry in auths.items():
                if _host_of(key) == host:
                    cred = _decode(entry, f"credential file {path} auths.{key}")
                    if cred is not None:
                        return cred
            if path == self.docker_config:
                helpers = doc.get("credHelpers") or {}
                helper = helpers.get(host) if isinstance(helpers, dict) else None
                helper = helper or doc.get("credsStore")
                if isinstance(helper, str) and helper:
                    return _run_helper(helper, host)
        return None

    def save(self, registry: str, username: str, password: str) -> None:
        """Store credentials in Kettle's file, written atomically with mode 0600."""
        doc = self._load(self.kettle_file, True)
        auths = doc.setdefault("auths", {})
        assert isinstance(auths, dict)
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        auths[_host_of(registry)] = {"auth": token}
        self._store(doc)

    def remove(self, registry: str) -> bool:
        doc = self._load(self.kettle_file, True)
        auths = doc.get("auths") or {}
        if not isinstance(auths, dict) or _host_of(registry) not in auths:
            return False
        del auths[_host_of(registry)]
        self._store(doc)
        return True

    def _store(self, doc: dict[str, object]) -> None:
        d = os.path.dirname(self.kettle_file)
        os.makedirs(d, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".auth-", dir=d)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.kettle_file)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


def _run_helper(helper: str, host: str) -> Credential | None:
    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        raise InvalidArgument(f"credential helper docker-credential-{helper} not found for {host}")
    server = _HUB_KEY if host == "docker.io" else host
    proc = subprocess.run([exe, "get"], input=server.encode(), capture_output=True, timeout=30)
    if proc.returncode != 0:
        if b"not found" in proc.stdout.lower() or b"not found" in proc.stderr.lower():
            return None
        raise PermissionDenied(
            f"credential helper docker-credential-{helper} failed for {host}:"
            f" {proc.stderr.decode(errors='replace').strip().lower()}"
        )
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise InvalidArgument(f"credential helper docker-credential-{helper}: bad output") from None
    user, secret = str(out.get("Username", "")), str(out.get("Secret", ""))
    if user == "<token>":
        return Credential(identity_token=secret)
    return Credential(user, secret)
