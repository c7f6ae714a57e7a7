#!/usr/bin/env bash
# compose.yaml, checked without running it: its images (postgres:16, minio/minio,
# minio/mc) cannot be pulled on a machine without registry access, and Debian has
# neither PostgreSQL 16 nor MinIO to make stand-ins from. What is checked:
#   - podman-compose (in the Python virtualenv given as $1) reads and resolves it;
#   - every FACES_* variable it sets is one the image's `faces serve` / `faces
#     worker` reads, and every command it runs is one the binary has.
#   scripts/container/check-compose.sh [VENV]   # after test-image.sh built localhost/faces:ci
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/container/podman-env.sh
fail() { echo "check-compose.sh: FAILED: $*" >&2; exit 1; }
VENV=${1:-${HOME:-/tmp}/.cache/faces-ci/venv}
IMAGE=localhost/faces:ci

[[ -x $VENV/bin/podman-compose ]] || "$VENV/bin/python" -m pip install -q podman-compose==1.6.0
podman image exists "$IMAGE" || fail "$IMAGE is missing: scripts/container/test-image.sh builds it"
resolved=$("$VENV/bin/podman-compose" -f compose.yaml config 2>"$CONTAINER_STATE/compose-config.log") \
  || fail "podman-compose config: $(cat "$CONTAINER_STATE/compose-config.log")"

# service, command and variable names, one "service<TAB>command<TAB>VAR VAR …" line each
# for the services built from the Dockerfile.
"$VENV/bin/python" -c '
import sys, yaml
for name, service in yaml.safe_load(sys.stdin)["services"].items():
    if "build" in service:
        command = (service.get("command") or ["serve"])[0]
        print(name, command, " ".join(sorted(service.get("environment", {}))), sep="\t")
' <<<"$resolved" >"$CONTAINER_STATE/compose-services.tsv"
[[ -s $CONTAINER_STATE/compose-services.tsv ]] || fail "compose.yaml builds no service from the Dockerfile"
while IFS=$'\t' read -r service command vars; do
  help=$(podman run --rm "$IMAGE" "$command" --help 2>&1) || fail "$service: faces $command: $help"
  for var in $vars; do
    grep -q "\b$var\b" <<<"$help" || fail "$service sets $var, which faces $command does not read"
  done
  echo "check-compose.sh: $service: faces $command reads all of ${vars// /, }" >&2
done <"$CONTAINER_STATE/compose-services.tsv"
echo "check-compose.sh: compose.yaml resolves; not run (its postgres and minio images cannot be pulled here)" >&2
