#!/usr/bin/env bash
# The main job through the engine: a busybox image built locally (Debian's busybox-static, umoci),
# served by Debian's docker-registry on 127.0.0.1, pulled by a private kettled and run with kctl.
# Everything lives in one temporary directory and is removed at the end (registry, kettled,
# shims, mounts).  Usage: scripts/demo-kettled.sh [--no-install]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${1:-}" != "--no-install" ]]; then
    "$repo/scripts/install.sh"
fi
bin="$repo/.venv/bin"
busybox="$(readlink -f /bin/busybox)"
work="$(mktemp -d /tmp/kettle-demo-kettled.XXXXXX)"
registry_pid=""
kettled_pid=""
namespace=""
cleanup() {
    if [[ -n "$kettled_pid" ]]; then
        kill -TERM "$kettled_pid" 2>/dev/null || true
        wait "$kettled_pid" 2>/dev/null || true
    fi
    if [[ -n "$registry_pid" ]]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    # Nothing of ours may stay mounted under the work directory before it goes.
    { grep -F " $work/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$work"
    # The shims' runtime state directory of our namespace (empty once every container is gone).
    if [[ -n "$namespace" ]]; then
        rmdir "/run/containerd/kettle/$namespace" 2>/dev/null || true
    fi
}
trap cleanup EXIT

echo "==> building a busybox image (OCI layout) with umoci"
layout="$work/layout"
umoci init --layout "$layout"
umoci new --image "$layout:latest"
umoci unpack --image "$layout:latest" "$work/unpacked" >/dev/null
rootfs="$work/unpacked/rootfs"
mkdir -p "$rootfs"/{bin,etc,tmp,root}
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -sf busybox "$rootfs/bin/$applet"
done
echo "root:x:0:0:root:/root:/bin/sh" >"$rootfs/etc/passwd"
echo "root:x:0:" >"$rootfs/etc/group"
umoci repack --image "$layout:latest" "$work/unpacked"
umoci config --image "$layout:latest" --config.cmd /bin/sh --config.env PATH=/bin

echo "==> serving it from a private docker-registry on 127.0.0.1"
port="$("$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
ref="127.0.0.1:$port/demo/busybox:latest"
skopeo copy --quiet --dest-tls-verify=false "oci:$layout:latest" "docker://$ref"

echo "==> starting a private kettled"
sock="$work/kettle.sock"
namespace="demo-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
cat >"$work/kettled.toml" <<EOF
namespace = "$namespace"
[registry]
plain_http = ["127.0.0.1:$port"]
EOF
"$bin/kettled" --config "$work/kettled.toml" --root "$work/root" --state "$work/state" \
    --address "$sock" >"$work/kettled.log" 2>&1 &
kettled_pid=$!
for _ in $(seq 100); do
    [[ -S "$sock" ]] && "$bin/kctl" --address "$sock" version >/dev/null 2>&1 && break
    sleep 0.1
done

kctl() { "$bin/kctl" --address "$sock" "$@"; }
echo "==> kctl pull $ref"
kctl pull "$ref"
echo "==> kctl run --rm $ref"
kctl run --rm --hostname kettle-demo "$ref" \
    sh -c 'echo "hello from inside a kettled container: hostname=$(hostname), pid=$$"'
echo "==> a detached container: kctl run -d, exec, logs, ps, stop, rm"
kctl run -d --name demo-web --restart on-failure:3 --memory 64m "$ref" \
    sh -c 'echo "serving (pretend)"; exec sleep 300' >/dev/null
kctl exec demo-web sh -c 'echo "exec inside: $(cat /proc/1/cmdline | tr "\0" " ")"'
kctl logs demo-web
kctl ps
kctl stop -t 1 demo-web >/dev/null
kctl rm demo-web >/dev/null
