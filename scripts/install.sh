#!/usr/bin/env bash
# Installs everything Kettle needs on a fresh Debian 12 machine (run as root), idempotently:
# the Debian packages the runtime and its tests drive, a virtual environment at <repo>/.venv with
# Kettle installed editable, and the console scripts linked into /usr/local/bin.
# Downloads nothing but Debian and PyPI packages.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: must run as root (it installs Debian packages)" >&2
    exit 1
fi

packages=(
    # what the runtime itself uses or execs
    busybox-static libseccomp2 uidmap iproute2 iptables
    # kctl run --init: tini-static is bind-mounted into the container as its pid 1
    tini
    # peers the tests and the benchmark drive
    runc crun containerd podman skopeo umoci docker-registry containernetworking-plugins
    # building the test probe, the venv, helpers the tests call
    gcc libc6-dev python3 python3-venv python3-pip util-linux procps psmisc ca-certificates
    # the image tests: TLS and htpasswd for the private registry, tar for layers
    openssl apache2-utils tar
    # the OCI runtime-tools validation suite (tests/conformance): Go and its library sources
    golang-go golang-github-opencontainers-runtime-tools-dev golang-github-google-uuid-dev
    golang-gopkg-yaml.v2-dev
)
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${packages[@]}"

# The interpreter for the venv must be a real one, never a pyenv shim (a shell script that
# costs ~100 ms per start).  Debian's /usr/bin/python3 is preferred when it is new enough: it is
# reachable by every user, which rootless containers (kettle-runtime run by an unprivileged
# user) need, while an interpreter under /root (pyenv) is not.  KETTLE_PYTHON overrides.
is_new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if [[ -n "${KETTLE_PYTHON:-}" ]]; then
    python_real="$KETTLE_PYTHON"
elif is_new_enough /usr/bin/python3; then
    python_real=/usr/bin/python3
else
    python_real="$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')"
fi
if ! is_new_enough "$python_real"; then
    echo "install.sh: $python_real is missing or older than Python 3.11" >&2
    exit 1
fi

venv="$repo/.venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    "$python_real" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# compat mode: a .pth path entry instead of an import hook, so the runtime's startup stays cheap.
"$venv/bin/python" -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat

# kettle-runtime and the shim start once per container operation, so their launchers are our
# own rather than pip's: `-IS` skips site (and with it every .pth file) and user paths, ~5 ms a
# start, and pip's template would also import re (~6 ms).  Both need only the standard library.
# kctl too (a command per keystroke of its user), with the venv's site-packages named by hand
# since -S leaves them out: it needs grpcio.
site_packages="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
write_launcher() { # NAME MODULE [EXTRA_PATH]
    cat >"$venv/bin/$1" <<LAUNCHER
#!$venv/bin/python -IS
# Written by scripts/install.sh (see there for why this is not pip's launcher).
import sys
sys.path[:0] = ["$repo/src"${3:+, \"$3\"}]
from $2 import main
sys.exit(main())
LAUNCHER
    chmod 0755 "$venv/bin/$1"
}
write_launcher kettle-runtime kettle.runtime.cli
write_launcher containerd-shim-kettle-v2 kettle.shim.main
write_launcher kctl kettle.cli.main "$site_packages"
# Bytecode ahead of time: a start must never pay for compiling (PYTHONDONTWRITEBYTECODE may be
# set, and an unprivileged user cannot write __pycache__ here).
"$venv/bin/python" -m compileall -q "$repo/src" >/dev/null

# Entry points are linked, not copied: their shebang already names the venv's interpreter.
shopt -s nullglob
for script in "$venv"/bin/kettle* "$venv"/bin/kctl* "$venv"/bin/containerd-shim-kettle*; do
    ln -sfn "$script" "/usr/local/bin/$(basename "$script")"
done
echo "install.sh: kettle installed in $venv; console scripts linked into /usr/local/bin"
