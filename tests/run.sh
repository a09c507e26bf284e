#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite: the README's test command.
#
# Installs the system tools the tests drive for real (OpenSSH's ssh-keygen,
# ssh-agent and ssh-add; curl; tmux for the cockpit) when they are missing,
# makes .venv, installs dragoon with every extra and the test tools ('.[test]' pulls in
# '[all]'), checks ruff, runs pytest in DRAGOON_TEST_WORKERS processes (2 by default;
# 0 runs in this one). Most tests wait on real relays, drones and tasks rather than on
# the CPU, so two files at a time finish the suite well inside 15 minutes on 2 cores
# (three were faster still, but loaded timing-sensitive tests past their deadlines);
# --dist loadfile keeps each file's module-scoped relay in one worker.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
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
workers=${DRAGOON_TEST_WORKERS:-2}
if [[ $workers -gt 0 ]]; then
  exec .venv/bin/python -m pytest -q -n "$workers" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest -q "$@"
