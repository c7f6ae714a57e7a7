#!/usr/bin/env bash
# Throwaway single-node Garage (S3-compatible) for faces integration tests, on 127.0.0.1 only.
#   eval "$(scripts/services/garage.sh)"   # start, or reuse the running one
#   scripts/services/garage.sh stop
# FACES_GARAGE_BIN picks the binary (default: `garage` on PATH, else ~/.cargo/bin/garage,
# installed here as a debug build: quick to build for tests, but Garage's C dependencies
# at -O0 take most of a core, so benchmarks want a release build, see docs/benchmarks/README.md).
# Idempotent: the rpc secret and the S3 key live in the state dir and are reused.
set -euo pipefail

STATE=${FACES_SERVICES_DIR:-/tmp/faces-services}/garage
S3_PORT=${FACES_GARAGE_S3_PORT:-53900}
RPC_PORT=${FACES_GARAGE_RPC_PORT:-53901}
ADMIN_PORT=${FACES_GARAGE_ADMIN_PORT:-53903}
BUCKET=faces
PIDFILE=$STATE/garage.pid
export GARAGE_CONFIG_FILE=$STATE/garage.toml # read by every `garage` CLI call below
log() { echo "garage.sh: $*" >&2; }

running() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
exports() {
  echo "export FACES_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT FACES_TEST_S3_BUCKET=$BUCKET" \
    "FACES_TEST_S3_REGION=garage FACES_TEST_S3_ACCESS_KEY_ID=$KEY_ID FACES_TEST_S3_SECRET_ACCESS_KEY=$SECRET"
}

if [[ ${1:-start} == stop ]]; then
  if running; then
    pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$PIDFILE"
  exit 0
fi

# Fast path: already set up and healthy (/health is 200 only once the layout is live).
if running && [[ -f $STATE/s3-key ]] && curl -fs -o /dev/null "http://127.0.0.1:$ADMIN_PORT/health"; then
  read -r KEY_ID SECRET <"$STATE/s3-key"
  exports
  exit 0
fi

GARAGE=${FACES_GARAGE_BIN:-$(command -v garage || echo "${CARGO_HOME:-$HOME/.cargo}/bin/garage")}
if [[ -n ${FACES_GARAGE_BIN:-} && ! -x $GARAGE ]]; then
  log "FACES_GARAGE_BIN=$GARAGE is not an executable"
  exit 1
fi
if [[ ! -x $GARAGE ]]; then
  log "installing garage 2.5.0 with cargo (a debug build takes ~6-7 min on 2 cores)"
  env -u CARGO_TARGET_DIR cargo install garage --version 2.5.0 --locked --no-default-features \
    --features bundled-libs,lmdb,sqlite --debug >&2
fi
garage() { "$GARAGE" "$@"; }

mkdir -p "$STATE/meta" "$STATE/data"
# Secrets are generated once; keeping them makes re-runs and restarts reuse the same cluster and key.
# Key id format: GK + 24 hex digits, imported below with `garage key import`.
(
  umask 077
  [[ -f $STATE/rpc_secret ]] || openssl rand -hex 32 >"$STATE/rpc_secret"
  [[ -f $STATE/s3-key ]] || echo "GK$(openssl rand -hex 12) $(openssl rand -hex 32)" >"$STATE/s3-key"
)
read -r KEY_ID SECRET <"$STATE/s3-key"

(umask 077 && cat >"$GARAGE_CONFIG_FILE") <<EOF
metadata_dir = "$STATE/meta"
data_dir = "$STATE/data"
db_engine = "lmdb"
# Photos are JPEG/PNG already: zstd over them costs CPU and saves nothing.
compression_level = "none"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(cat "$STATE/rpc_secret")"

[s3_api]
api_bind_addr = "127.0.0.1:$S3_PORT"
s3_region = "garage"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
EOF

if ! running; then
  log "starting on 127.0.0.1:$S3_PORT (log: $STATE/garage.log)"
  setsid nohup "$GARAGE" server >>"$STATE/garage.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
fi
for i in $(seq 150); do
  garage status >/dev/null 2>&1 && break
  running || { tail -n 20 "$STATE/garage.log" >&2; exit 1; }
  [[ $i == 150 ]] && { log "no answer over RPC after 30s"; exit 1; }
  sleep 0.2
done

# Layout: only on a fresh cluster (version 0), so re-runs never stage changes.
if garage layout show | grep -q 'Current cluster layout version: 0'; then
  NODE_ID=$(garage node id -q | cut -d@ -f1)
  garage layout assign -z dc1 -c 1G "$NODE_ID" >/dev/null
  garage layout apply --version 1 >/dev/null
fi

garage bucket info "$BUCKET" >/dev/null 2>&1 || garage bucket create "$BUCKET" >/dev/null
garage key info "$KEY_ID" >/dev/null 2>&1 || garage key import --yes -n faces-test "$KEY_ID" "$SECRET" >/dev/null
garage bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID" >/dev/null

for i in $(seq 150); do
  curl -fs -o /dev/null "http://127.0.0.1:$ADMIN_PORT/health" && break
  [[ $i == 150 ]] && { log "cluster not healthy after 30s"; exit 1; }
  sleep 0.2
done
exports
