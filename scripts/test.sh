#!/usr/bin/env bash
# Installs everything (scripts/install.sh), then runs lint, format check, type check and the whole
# pytest suite (unit, integration, peers).  Every step runs even if an earlier one failed; the exit
# status is non-zero if any failed.  The last line printed is pytest's summary line.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

"$repo/scripts/install.sh" || { echo "test.sh: install.sh failed" >&2; exit 1; }

venv="$repo/.venv"
failed=()
step() {
    local name="$1"
    shift
    echo "==> $name: $*"
    if ! "$@"; then
        failed+=("$name")
    fi
}

step "ruff check" "$venv/bin/ruff" check .
step "ruff format" "$venv/bin/ruff" format --check .
step "mypy" "$venv/bin/mypy"

log="$(mktemp /tmp/kettle-pytest.XXXXXX)"
trap 'rm -f "$log"' EXIT
echo "==> pytest"
"$venv/bin/python" -m pytest tests/ -p no:cacheprovider 2>&1 | tee "$log"
pytest_rc=${PIPESTATUS[0]}
if [[ $pytest_rc -ne 0 ]]; then
    failed+=("pytest")
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "test.sh: FAILED steps: ${failed[*]}"
    # pytest's own summary line ("==== N passed, M skipped in Xs ====") goes last.
    grep -E '^=+ .* in [0-9.]+s.* =+$' "$log" | tail -n 1
    exit 1
fi
