#!/usr/bin/env bash
# The container image as users run it: built from the Dockerfile (on the local
# stand-in base images, scripts/container/build-base-images.sh), started with a named
# volume on /data, a real photo uploaded through the published port until `done`, the
# container restarted and the submission still there with the same faces, the
# HEALTHCHECK healthy, and the image's size printed.
#   scripts/container/test-image.sh     # photos from ${FACES_TEST_DATA:-../shared/data}
# FACES_CONTAINER_PORT (default 18282) is the host port; the container and volume it
# makes are removed on exit, the image (localhost/faces:ci) and the build cache kept
# (the cache mounts: crates, and the target folder in /var/tmp/buildah-cache).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/container/podman-env.sh
log() { echo "test-image.sh: $*" >&2; }
fail() {
  echo "test-image.sh: FAILED: $*" >&2
  if podman container exists "$NAME" 2>/dev/null; then
    echo "--- the container's log:" >&2
    podman logs --tail 40 "$NAME" >&2 || true
  fi
  if [[ -s $CONTAINER_STATE/run.log ]]; then
    echo "--- podman run/restart said:" >&2
    cat "$CONTAINER_STATE/run.log" >&2
  fi
  exit 1
}

IMAGE=localhost/faces:ci
NAME=faces-ci-container
VOLUME=faces-ci-data
PORT=${FACES_CONTAINER_PORT:-18282}
BASE=http://127.0.0.1:$PORT
DATA=${FACES_TEST_DATA:-../shared/data}
PHOTO=fr_two_people.jpg
[[ -f $DATA/known_counts/$PHOTO ]] || fail "$DATA/known_counts/$PHOTO is missing (FACES_TEST_DATA names the data folder)"
EXPECTED=$(python3 -c 'import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    if row["file"] == sys.argv[2]: print(row["faces"])' "$DATA/known_counts/counts.jsonl" "$PHOTO")

cleanup() {
  podman rm -f -t 2 "$NAME" >/dev/null 2>&1 || true
  podman volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  # Each build leaves its build stage behind as an untagged image (1.3 GB); the cache
  # mounts, not these, are what makes the next build quick.
  podman image prune -f >/dev/null 2>&1 || true
}
cleanup # what an interrupted earlier run left
trap cleanup EXIT

# Polls "$@" once a second until it succeeds; fails after $deadline seconds.
wait_for() { # $1: seconds, $2: what, then the command
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || fail "no $what within the deadline"
    podman container exists "$NAME" && [[ $(podman inspect -f '{{.State.Running}}' "$NAME") == true ]] \
      || fail "the container stopped while waiting for $what"
    sleep 1
  done
}
json_field() { python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)[sys.argv[1]]))' "$1"; }
answers() { curl -fsS -o /dev/null --max-time 2 "$BASE/healthcheck" 2>/dev/null; }
is_done() {
  local status
  status=$(curl -fsS --max-time 5 "$BASE/image/$ID" | json_field status) || return 1
  [[ $status != '"failed"' ]] || fail "the submission failed: $(curl -sS "$BASE/image/$ID")"
  [[ $status == '"done"' ]]
}
healthy() {
  podman healthcheck run "$NAME" >/dev/null 2>&1
}

log "base images"
start=$SECONDS
scripts/container/build-base-images.sh
log "base images ready in $((SECONDS - start)) s"
log "building $IMAGE from the Dockerfile"
start=$SECONDS
podman build --pull=never --format docker -t "$IMAGE" . >"$CONTAINER_STATE/build.log" 2>&1 \
  || { tail -n 30 "$CONTAINER_STATE/build.log" >&2; fail "podman build (log: $CONTAINER_STATE/build.log)"; }
log "built in $((SECONDS - start)) s"
[[ $(podman image inspect -f '{{.Config.Healthcheck}}' "$IMAGE") == *healthcheck* ]] \
  || fail "$IMAGE has no HEALTHCHECK (an OCI-format build drops it: build with --format docker)"

log "starting $NAME with volume $VOLUME on /data, port $PORT"
podman volume create "$VOLUME" >/dev/null
# Without systemd podman cannot schedule the periodic health checks and says so on
# stderr (kept in run.log); `podman healthcheck run` below runs the image's check.
podman run -d --name "$NAME" -v "$VOLUME:/data" -p "127.0.0.1:$PORT:8282" "$IMAGE" \
  >/dev/null 2>"$CONTAINER_STATE/run.log" || fail "podman run"
wait_for 60 "answer on $BASE/healthcheck" answers
[[ $(podman exec "$NAME" id -u) == 10001 ]] || fail "the service does not run as the image's user faces (10001)"

log "uploading $PHOTO ($EXPECTED faces)"
ID=$(curl -fsS -F "image=@$DATA/known_counts/$PHOTO" "$BASE/image/" | json_field id | tr -d '"') \
  || fail "POST /image/ refused the photo"
wait_for 120 "status done for $ID" is_done
FACES=$(curl -fsS "$BASE/image/$ID" | json_field faces)
COUNT=$(curl -fsS "$BASE/image/$ID" | json_field faces_count)
[[ $COUNT == "$EXPECTED" ]] || fail "$PHOTO: $COUNT faces, expected $EXPECTED"
MARKED=$(curl -fsS "$BASE/image/$ID" | json_field image_url | python3 -c 'import json, sys, urllib.parse; print(urllib.parse.urlsplit(json.load(sys.stdin)).path)')
curl -fsS -o /dev/null "$BASE$MARKED" || fail "the marked copy $MARKED is not served"
log "done: $COUNT faces, marked copy served"

wait_for 30 "healthy HEALTHCHECK" healthy

log "restarting the container"
podman restart -t 10 "$NAME" >/dev/null 2>>"$CONTAINER_STATE/run.log" || fail "podman restart"
wait_for 60 "answer after the restart" answers
AFTER=$(curl -fsS "$BASE/image/$ID") || fail "GET /image/$ID after the restart"
[[ $(json_field status <<<"$AFTER") == '"done"' ]] || fail "after the restart: $AFTER"
[[ $(json_field faces <<<"$AFTER") == "$FACES" ]] || fail "other faces after the restart: $AFTER"
curl -fsS -o /dev/null "$BASE$MARKED" || fail "the marked copy $MARKED is gone after the restart"
wait_for 30 "healthy HEALTHCHECK after the restart" healthy
log "after the restart: $ID still done, same faces, marked copy served; health: $(podman inspect -f '{{.State.Health.Status}}' "$NAME")"

SIZE=$(podman image inspect -f '{{.Size}}' "$IMAGE")
log "image $IMAGE: $((SIZE / 1000000)) MB ($(podman image inspect -f '{{.Size}}' "$(dockerfile_base debian)" | awk '{printf "%d", $1 / 1000000}') MB of it the debian base)"
log "passed"
