#!/usr/bin/env bash
# The test command (the README's second command; .ci/run runs it): `bash scripts/test.sh`,
# as root on a fresh Debian 12 machine.
# Installs and starts what the tests need (Docker, the registry image, a venv), lints,
# type-checks and runs the whole test suite. Any failure, or a run with no tests, fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "== setting up Docker and the registry test image"
bash scripts/start-docker.sh

echo "== virtualenv .venv"
PYTHON="${PYTHON:-python3}"
if ! .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  rm -rf .venv
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== mypy"
.venv/bin/mypy retentiond
.venv/bin/mypy tests bench scripts fuzz

echo "== pytest"
set +e
.venv/bin/python -m pytest -q
status=$?
set -e
if [[ $status -eq 5 ]]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
if [[ $status -ne 0 ]]; then
  exit "$status"
fi

echo "== fuzz (bounded: about 20 s per target)"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash scripts/fuzz.sh
