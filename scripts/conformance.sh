#!/usr/bin/env bash
# Runs the OCI runtime-tools validation suite by hand and prints, per validation program, the TAP
# summary for kettle-runtime beside runc (and any runtime given as NAME=PATH arguments).
#
#   scripts/conformance.sh [NAME=PATH ...] [-- PROGRAM ...]
#
# Needs root, golang-go and the runtime-tools validation sources: Debian's
# golang-github-opencontainers-runtime-tools-dev has only the library packages, so point
# KETTLE_RUNTIME_TOOLS_SRC at a runtime-tools checkout (see tests/conformance/suite.py).
# Exit status: 0 when every applicable program passes on kettle-runtime, 1 otherwise, 2 when the
# suite cannot be found.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

runtimes=(--runtime "kettle-runtime=$repo/.venv/bin/kettle-runtime")
if command -v runc >/dev/null; then
    runtimes+=(--runtime "runc=$(command -v runc)")
fi
while [[ $# -gt 0 && $1 != -- ]]; do
    runtimes+=(--runtime "$1")
    shift
done
[[ ${1:-} == -- ]] && shift

exec "$repo/.venv/bin/python" -m tests.conformance.suite -v "${runtimes[@]}" "$@"
