#!/usr/bin/env bash
# The main job: (1) a busybox image built locally (umoci, Debian's busybox-static) served by a
# private docker-registry, pulled by a private kettled and run through kctl
# (scripts/demo-kettled.sh); (2) the same busybox as a bare OCI bundle run in the foreground
# by kettle-runtime alone.
# Usage: scripts/demo.sh [--no-install]   (installs first unless --no-install)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" != "--no-install" ]]; then
    "$repo/scripts/install.sh"
fi
venv="$repo/.venv"
"$repo/scripts/demo-kettled.sh" --no-install

echo "==> the OCI runtime alone: kettle-runtime run of a busybox bundle"
# KETTLE_DEMO_RUNTIME lets the same demo run under runc or crun for comparison.
runtime="${KETTLE_DEMO_RUNTIME:-$venv/bin/kettle-runtime}"
busybox="$(readlink -f /bin/busybox)"

bundle="$(mktemp -d /tmp/kettle-demo.XXXXXX)"
id="demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
cleanup() {
    "$runtime" delete --force "$id" >/dev/null 2>&1 || true
    rm -rf "$bundle"
}
trap cleanup EXIT

mkdir -p "$bundle/rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,root}
cp "$busybox" "$bundle/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$bundle/rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$bundle/rootfs/etc/passwd"
echo "root:x:0:" >"$bundle/rootfs/etc/group"

"$runtime" spec --bundle "$bundle"
"$venv/bin/python" - "$bundle/config.json" <<'PY'
import json
import sys

path = sys.argv[1]
with open(path) as f:
    config = json.load(f)
config["process"]["terminal"] = False
config["process"]["args"] = [
    "/bin/sh",
    "-c",
    'echo "hello from inside kettle: hostname=$(hostname), pid=$$, uid=$(id -u)"',
]
config["hostname"] = "kettle-demo"
with open(path, "w") as f:
    json.dump(config, f, indent=2)
PY

"$runtime" run --bundle "$bundle" "$id"
