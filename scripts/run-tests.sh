#!/usr/bin/env bash
# Runs the whole test suite; pytest's exit 5 (no tests collected) counts as failure.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pytest tests "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
