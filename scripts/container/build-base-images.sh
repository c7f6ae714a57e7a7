#!/usr/bin/env bash
# Local stand-ins for the Dockerfile's base images, for machines that reach Debian's
# mirror but no image registry (CI). Each is stored under the exact name the
# Dockerfile's FROM gives, so the Dockerfile is built unchanged, as a Docker user
# builds it:
#   debian:<ver>-slim      a bookworm rootfs made by debootstrap --variant=minbase,
#                          trimmed the way the official slim image is (no docs, man
#                          pages, locales, apt lists);
#   rust:<ver>-bookworm    that image plus build-essential, with this machine's Rust
#                          toolchain copied in (the version must match the tag), and
#                          the extra CA certificates this machine trusts
#                          (/usr/local/share/ca-certificates), so cargo reaches the
#                          crate registry through the same TLS proxy the machine uses.
#                          Only the build stage sees them: the faces image does not.
#   scripts/container/build-base-images.sh     # idempotent: an existing image is kept
# FACES_DEBIAN_MIRROR picks the mirror (default: debootstrap's, Debian's redirector).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/container/podman-env.sh
log() { echo "build-base-images.sh: $*" >&2; }
MIRROR=${FACES_DEBIAN_MIRROR:-}

DEBIAN_IMAGE=$(dockerfile_base debian)
RUST_IMAGE=$(dockerfile_base rust)

if podman image exists "$DEBIAN_IMAGE"; then
  log "$DEBIAN_IMAGE exists"
else
  log "making $DEBIAN_IMAGE with debootstrap from ${MIRROR:-its default mirror}"
  rootfs=$(mktemp -d "$CONTAINER_STATE/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" ${MIRROR:+"$MIRROR"} >"$CONTAINER_STATE/debootstrap.log" 2>&1 \
    || { log "debootstrap failed; see $CONTAINER_STATE/debootstrap.log"; tail -n 20 "$CONTAINER_STATE/debootstrap.log" >&2; exit 1; }
  # The mirror debootstrap used, from the sources it wrote: `deb <mirror> bookworm main`.
  MIRROR=$(awk '$1 == "deb" { print $2; exit }' "$rootfs/etc/apt/sources.list")
  [[ -n $MIRROR ]] || { log "no mirror in the rootfs's sources.list"; exit 1; }
  # The official image's sources (updates and security too) and slimming rules.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: ${MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR}-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$rootfs"/usr/share/{man,groff,info,lintian,linda,locale}/* \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/tmp/*
  want=${DEBIAN_IMAGE##*:}
  want=${want%-slim}
  got=$(cat "$rootfs/etc/debian_version")
  [[ $want == "$got" ]] || log "note: the mirror serves Debian $got, the tag says $want"
  tar -C "$rootfs" --numeric-owner -c . \
    | podman import --quiet --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

if podman image exists "$RUST_IMAGE"; then
  log "$RUST_IMAGE exists"
else
  want=${RUST_IMAGE##*:}
  want=${want%-bookworm}
  command -v rustc >/dev/null || { log "rustc not found: the rust stand-in copies this machine's toolchain"; exit 1; }
  got=$(rustc -V | awk '{print $2}')
  # A stand-in only: with another toolchain here, the image under the pinned name holds
  # that one instead (the workspace builds on both, or the host build failed first).
  if [[ $got != "$want" ]]; then
    log "warning: the Dockerfile pins Rust $want, this machine has $got: the stand-in holds $got"
  fi
  sysroot=$(rustc --print sysroot)
  log "making $RUST_IMAGE from $DEBIAN_IMAGE and the toolchain in $sysroot"
  context=$(mktemp -d "$CONTAINER_STATE/rust-context.XXXXXX")
  trap 'rm -rf "$context"' EXIT
  mkdir "$context/extra-ca"
  cp /usr/local/share/ca-certificates/*.crt "$context/extra-ca/" 2>/dev/null || true
  # The official image's layout: rustup's folders under /usr/local, cargo on PATH.
  # The toolchain is copied from a read-only mount (no rustup: nothing to download).
  cat >"$context/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo RUST_VERSION=$want \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY extra-ca/ /usr/local/share/ca-certificates/
RUN apt-get update \\
    && apt-get install -y --no-install-recommends build-essential ca-certificates pkg-config git \\
    && rm -rf /var/lib/apt/lists/*
RUN tc=/usr/local/rustup/toolchains/$want-x86_64-unknown-linux-gnu \\
    && mkdir -p "\$tc" /usr/local/cargo/bin \\
    && cp -a /toolchain/bin /toolchain/lib /toolchain/libexec /toolchain/etc "\$tc"/ \\
    && for bin in "\$tc"/bin/*; do ln -s "\$bin" /usr/local/cargo/bin/; done \\
    && rustc -V && cargo -V
CMD ["bash"]
EOF
  podman build --pull=never --format docker -v "$sysroot:/toolchain:ro" \
    -t "$RUST_IMAGE" "$context" >"$CONTAINER_STATE/rust-image.log" 2>&1 \
    || { log "building $RUST_IMAGE failed; see $CONTAINER_STATE/rust-image.log"; tail -n 20 "$CONTAINER_STATE/rust-image.log" >&2; exit 1; }
  rm -rf "$context"
  trap - EXIT
fi
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
  | grep -F -e "${DEBIAN_IMAGE%:*}:${DEBIAN_IMAGE##*:}" -e "${RUST_IMAGE%:*}:${RUST_IMAGE##*:}" >&2
