#!/usr/bin/env bash
# The test command: lint, type-check, build the docs, then the whole suite against real services it starts itself.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

"$VENV/bin/ruff" check src tests benchmarks scripts || exit 1
"$VENV/bin/mypy" || exit 1
# The documentation: a broken link, a missing anchor or a page left out of the nav fails the build
# (strict), built into a temporary directory so nothing is left behind. Not --quiet: it silences the
# warnings, and strict then has none to count, so a broken link would pass. Its log is shown only when
# the build fails. README.md is outside docs/, so its relative links are checked separately.
docs_site=$(mktemp -d)
docs_log=$("$VENV/bin/mkdocs" build --strict --site-dir "$docs_site" 2>&1)
docs_status=$?
rm -rf "$docs_site"
if [ "$docs_status" != 0 ]; then
  printf '%s\n' "$docs_log" >&2
  echo "test: the documentation does not build (mkdocs build --strict)" >&2
  exit 1
fi
"$VENV/bin/python" scripts/check_readme_links.py || exit 1
# The suite runs on TEST_WORKERS processes (pytest-xdist), each with its own clusters, broker and moto
# (session fixtures are per process): most tests wait on servers and JVMs, so two share 2 cores well. A
# module's tests run in one process, in their order (--dist loadfile): a module-scoped fixture (a
# failover aftermath, a MariaDB) is made once, and a test that follows another on it sees what it left.
# TEST_WORKERS=0 runs it in this one process.
workers=${TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
  "$VENV/bin/pytest" "$@"
else
  "$VENV/bin/pytest" -n "$workers" --dist loadfile "$@"
fi
status=$?
if [ "$status" = 5 ]; then
  # pytest's "no tests collected": neither a pass nor an ordinary failure, and CI must not take it for either.
  echo "test: pytest collected no tests; treating that as a failure" >&2
  exit 5
fi
exit "$status"
