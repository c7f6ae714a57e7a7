# Sourced by the scripts beside it: Debian's podman, installed if missing and set up
# for this kind of machine (root inside a container, no systemd, cgroup v1):
# runc rather than crun, cgroupfs rather than systemd, and no default ulimits (the
# defaults ask for more open files than such a machine lets a process raise).
# The settings live in a containers.conf of our own (CONTAINERS_CONF), so nothing
# under /etc changes.
CONTAINER_STATE=${FACES_CONTAINER_DIR:-${HOME:-/tmp}/.cache/faces-ci/container}
mkdir -p "$CONTAINER_STATE"

podman_missing=()
command -v podman >/dev/null || podman_missing+=(podman)
command -v runc >/dev/null || podman_missing+=(runc)
command -v debootstrap >/dev/null || podman_missing+=(debootstrap)
command -v curl >/dev/null || podman_missing+=(curl)
if ((${#podman_missing[@]})); then
  echo "podman-env.sh: installing Debian's ${podman_missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${podman_missing[@]}" >/dev/null
fi

cat >"$CONTAINER_STATE/containers.conf" <<'CONF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF=$CONTAINER_STATE/containers.conf
# Builds run their steps in a chroot: no nested user namespaces or cgroups needed.
export BUILDAH_ISOLATION=chroot

# The base images the Dockerfile names, fully qualified as podman stores them:
# `FROM rust:1.95.0-bookworm` is docker.io/library/rust:1.95.0-bookworm.
dockerfile_base() { # $1: image name (rust, debian)
  local ref
  ref=$(awk -v name="$1" 'toupper($1) == "FROM" && index($2, name ":") == 1 { print $2; exit }' Dockerfile)
  [[ -n $ref ]] || { echo "Dockerfile has no FROM $1:<tag>" >&2; return 1; }
  echo "docker.io/library/$ref"
}
