# PostgreSQL for the test suite: sourced by tests/run.sh (bash), never run on its own.
#
# pg_server_up exports DRAGOON_TEST_PG, the maintenance URL tests/support/pg.py creates
# its per-relay databases on. In order:
#   1. DRAGOON_TEST_PG when the caller set it (used as given, not probed: a wrong URL must
#      fail the PostgreSQL tests loudly, not fall back to another server);
#   2. this machine's server, DRAGOON_TEST_PG_LOCAL (default
#      postgresql://postgres@127.0.0.1:5432/test), when it answers a SELECT 1;
#   3. a throwaway cluster: Debian's postgresql installed with apt-get when no initdb is
#      found under /usr/lib/postgresql/*/bin, initdb'd into a fresh temp dir as an
#      unprivileged user (initdb refuses root: as root, the cluster runs as `nobody`),
#      listening on a free port on 127.0.0.1 only, trust auth, with a `test` database.
#      pg_server_down (tests/run.sh calls it from its EXIT trap) stops it and removes the
#      dir.
# DRAGOON_TEST_PG_LOCAL exists so the third path can be exercised on a machine that has
# a server: point it at a port nothing listens on (postgresql://postgres@127.0.0.1:1/test).
#
# The probe is the venv's python with psycopg (installed by '.[test]'), not pg_isready:
# a fresh machine may have no PostgreSQL client tools, and "accepting connections" is not
# "this URL logs in".

PG_TMP=""
PG_BIN=""
PG_USER=""

pg_probe() {  # pg_probe URL: exit 0 when URL logs in and answers SELECT 1
  .venv/bin/python - "$1" <<'EOF' >/dev/null 2>&1
import sys
import psycopg
with psycopg.connect(sys.argv[1], connect_timeout=3, autocommit=True) as conn:
    conn.execute("SELECT 1")
EOF
}

pg_find_bin() {  # the newest /usr/lib/postgresql/N/bin holding initdb and pg_ctl
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]] && echo "$dir"
}

pg_as_user() {  # run a command as the cluster's owner
  if [[ -n $PG_USER ]]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

pg_free_port() {
  .venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_install() {
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  echo "tests/run.sh: installing postgresql (a throwaway cluster for the PostgreSQL tests)" >&2
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq postgresql >/dev/null
}

pg_start_cluster() {
  PG_BIN=$(pg_find_bin) || true
  if [[ -z $PG_BIN ]]; then
    pg_install
    PG_BIN=$(pg_find_bin) || { echo "tests/run.sh: no initdb under /usr/lib/postgresql/*/bin after installing postgresql" >&2; return 1; }
  fi
  PG_USER=""
  [[ $(id -u) -eq 0 ]] && PG_USER=nobody
  # As root, in /tmp itself: a private TMPDIR may not be one `nobody` can enter.
  local parent=${TMPDIR:-/tmp}
  [[ -n $PG_USER ]] && parent=/tmp
  PG_TMP=$(mktemp -d "$parent/dragoon-test-pg.XXXXXX")
  chmod 0700 "$PG_TMP"
  [[ -n $PG_USER ]] && chown "$PG_USER" "$PG_TMP"
  local port
  port=$(pg_free_port)
  pg_as_user "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres -A trust -E UTF8 --no-sync \
    >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log" >&2; return 1; }
  # Throwaway data: no fsync. Many relays at once, each with its own pool: room for them.
  pg_as_user "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" \
    start >/dev/null \
    || { cat "$PG_TMP/server.log" >&2; return 1; }
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres test
  export DRAGOON_TEST_PG="postgresql://postgres@127.0.0.1:$port/test"
  echo "tests/run.sh: started a throwaway PostgreSQL on 127.0.0.1:$port ($PG_TMP)" >&2
}

pg_server_up() {
  if [[ -n ${DRAGOON_TEST_PG:-} ]]; then
    echo "tests/run.sh: PostgreSQL from DRAGOON_TEST_PG" >&2
    return 0
  fi
  local local_url=${DRAGOON_TEST_PG_LOCAL:-postgresql://postgres@127.0.0.1:5432/test}
  if pg_probe "$local_url"; then
    export DRAGOON_TEST_PG=$local_url
    echo "tests/run.sh: PostgreSQL on ${local_url#*@}" >&2
    return 0
  fi
  pg_start_cluster
}

pg_server_down() {  # stop and remove the throwaway cluster, if this shell started one
  [[ -n $PG_TMP ]] || return 0
  if [[ -f $PG_TMP/data/postmaster.pid ]]; then
    pg_as_user "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_TMP"
  PG_TMP=""
}
