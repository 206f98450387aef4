#!/usr/bin/env bash
# The test command: lint, type-check, then the whole suite against real services it starts itself.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

"$VENV/bin/ruff" check src tests benchmarks scripts || exit 1
"$VENV/bin/mypy" || exit 1
"$VENV/bin/pytest" "$@"
status=$?
if [ "$status" = 5 ]; then
  # pytest's "no tests collected": neither a pass nor an ordinary failure, and CI must not take it for either.
  echo "test: pytest collected no tests; treating that as a failure" >&2
  exit 5
fi
exit "$status"
