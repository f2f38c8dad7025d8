#!/usr/bin/env bash
# Runs the whole test suite (what `make test` and .ci/run call). Fails when pytest fails, when it
# collects no tests (its exit 5), and when any test is skipped that tests/skip_allowlist.txt does not
# name with a reason (tests/skip_guard.py prints the skip summary).
# PYTHON (default .venv/bin/python) and HILT_SKIP_ALLOWLIST may be overridden; arguments go to pytest
# after the test paths (default: tests).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
ALLOWLIST="${HILT_SKIP_ALLOWLIST:-tests/skip_allowlist.txt}"
read -r -a paths <<< "${HILT_TEST_PATHS:-tests}"
# the tests' own cache (never the user's ~/.cache/hilt), kept between runs so that content-addressed
# builds (board runtimes, rootfs images, demo models) are built once per machine, not once per run
export HILT_TEST_CACHE="${HILT_TEST_CACHE:-$HOME/.cache/hilt-test}"
"$PYTHON" -m pytest -p tests.skip_guard --skip-allowlist "$ALLOWLIST" -rs "${paths[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
