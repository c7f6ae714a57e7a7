#!/usr/bin/env bash
# Throwaway PostgreSQL for faces integration tests, on 127.0.0.1 only.
#   eval "$(scripts/services/postgres.sh)"   # start, or reuse the running one
#   scripts/services/postgres.sh stop
# Idempotent: a re-run against a running server only re-checks it.
set -euo pipefail

STATE=${FACES_SERVICES_DIR:-/tmp/faces-services}/postgres
PORT=${FACES_PG_PORT:-55432}
DATA=$STATE/data
log() { echo "postgres.sh: $*" >&2; }

# Debian keeps the server tools in /usr/lib/postgresql/<ver>/bin, off PATH.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1; }
BIN=$(pg_bin)
if [[ -z $BIN || ! -x $BIN/initdb || ! -x $BIN/pg_ctl ]]; then
  log "installing Debian's postgresql package"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  BIN=$(pg_bin)
fi

# The server refuses to run as root: use the package's `postgres` user.
as_pg() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
cd / # the postgres user may be unable to enter the caller's cwd (e.g. /root)

if [[ ${1:-start} == stop ]]; then
  if [[ -f $DATA/PG_VERSION ]] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
  fi
  exit 0
fi

mkdir -p "$STATE"
if [[ $EUID -eq 0 ]]; then chown postgres: "$STATE"; fi

if [[ ! -f $DATA/PG_VERSION ]]; then
  log "initdb $DATA"
  # trust: throwaway cluster, reachable only via 127.0.0.1 and a socket in $STATE.
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$STATE/initdb.log"
fi

if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null; then
  log "starting on 127.0.0.1:$PORT"
  # Socket in $STATE: Debian's default /var/run/postgresql may not exist.
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$STATE/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories='$STATE'" start >&2
fi
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 30

# Role and database; \gexec runs the CREATE only when the SELECT returns a row.
"$BIN/psql" -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres >/dev/null <<'SQL'
SELECT 'CREATE ROLE faces LOGIN PASSWORD ''faces''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'faces')\gexec
SELECT 'CREATE DATABASE faces OWNER faces' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'faces')\gexec
SQL

echo "export FACES_TEST_DATABASE_URL=postgres://faces:faces@127.0.0.1:$PORT/faces"
