#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite: the README's test command.
#
# Installs the system tools the tests drive for real (OpenSSH's ssh-keygen,
# ssh-agent and ssh-add; curl; tmux for the cockpit; HAProxy for the relay replicas)
# when they are missing, makes .venv, installs dragoon with every extra and the test
# tools ('.[test]' pulls in '[all]'), checks ruff, makes PostgreSQL available (tests/pg-server.sh: DRAGOON_TEST_PG
# when set, else the local server on 127.0.0.1:5432 when it answers, else a throwaway
# cluster started here and removed on exit), and runs pytest in DRAGOON_TEST_WORKERS
# processes (2 by default; 0 runs in this one). Most tests wait on real relays, drones
# and tasks rather than on the CPU, so two files at a time finish the suite well inside
# 15 minutes on 2 cores (three were faster still, but loaded timing-sensitive tests past
# their deadlines); --dist loadfile keeps each file's module-scoped relay in one worker.
#
# With no arguments, two runs: the whole suite on the default backend (SQLite), and
# tests/relay again with DRAGOON_TEST_BACKEND=postgresql beside it (docs/testing.md,
# "Both backends"); the last line adds both up ("N passed, M failed ...") and the exit status
# is non-zero when either failed. With arguments, one run of pytest with them, on the
# backend DRAGOON_TEST_BACKEND names (sqlite when unset).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
# HAProxy balances the relay replicas (tests/support/balancer.py); /usr/sbin may not be on
# a user's PATH.
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
  echo "tests/run.sh: installing ${need[*]}" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check --quiet .
source tests/pg-server.sh
# DRAGOON_TEST_REPORTS=DIR keeps the runs' JUnit reports (each test's time) there after
# the run, for a CI's artifacts or to find what makes the suite slow (docs/testing.md).
reports=$(mktemp -d "${TMPDIR:-/tmp}/dragoon-test-reports.XXXXXX")
pg_pid=""
cleanup() {
  [[ -z $pg_pid ]] || kill "$pg_pid" 2>/dev/null || true
  pg_server_down
  if [[ -n ${DRAGOON_TEST_REPORTS:-} ]]; then
    mkdir -p "$DRAGOON_TEST_REPORTS"
    cp "$reports"/*.xml "$reports"/*.log "$DRAGOON_TEST_REPORTS"/ 2>/dev/null || true
  fi
  rm -rf "$reports"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
pg_server_up

workers=${DRAGOON_TEST_WORKERS:-2}
pytest=(.venv/bin/python -m pytest -q)
[[ $workers -gt 0 ]] && pytest+=(-n "$workers" --dist loadfile)

if (($#)); then
  "${pytest[@]}" "$@"
  exit
fi

# The second run: tests/relay on PostgreSQL, beside the first in one more worker by
# default (docs/testing.md, "Both backends": tests/relay alone costs ~9 CPU-minutes, so
# after the suite it would end past 15 minutes; beside it, it uses the time the suite's
# workers spend waiting on relays and drones), its output shown when both are done.
# DRAGOON_TEST_PG_PASS=serial runs it after the first, in DRAGOON_TEST_WORKERS processes.
pg_run=(.venv/bin/python -m pytest -q --junitxml="$reports/postgresql.xml"
        --basetemp="$reports/pg-tmp")
status=0
case ${DRAGOON_TEST_PG_PASS:-parallel} in
  serial)
    DRAGOON_TEST_BACKEND=sqlite "${pytest[@]}" --junitxml="$reports/sqlite.xml" || status=1
    echo
    echo "tests/run.sh: tests/relay again, on PostgreSQL"
    [[ $workers -gt 0 ]] && pg_run+=(-n "$workers" --dist loadfile)
    DRAGOON_TEST_BACKEND=postgresql "${pg_run[@]}" tests/relay || status=1
    ;;
  parallel)
    pg_run+=(-n 1 --dist loadfile)
    DRAGOON_TEST_BACKEND=postgresql "${pg_run[@]}" tests/relay >"$reports/postgresql.log" 2>&1 &
    pg_pid=$!
    DRAGOON_TEST_BACKEND=sqlite "${pytest[@]}" --junitxml="$reports/sqlite.xml" || status=1
    wait "$pg_pid" || status=1
    pg_pid=""
    echo
    echo "tests/run.sh: tests/relay again, on PostgreSQL (run beside the suite):"
    cat "$reports/postgresql.log"
    ;;
  *)
    echo "tests/run.sh: DRAGOON_TEST_PG_PASS must be serial or parallel" >&2
    exit 2
    ;;
esac
echo
.venv/bin/python tests/summary.py "whole suite, sqlite=$reports/sqlite.xml" \
  "tests/relay, postgresql=$reports/postgresql.xml" || status=1
exit "$status"
