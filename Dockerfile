# Multi-stage build: compile in the Rust image, run from a small Debian base as a non-root user.
#   docker build -t faces .       (BuildKit, the default builder since Docker 23)
#   podman build --format docker -t faces .   (--format docker keeps the HEALTHCHECK)
# Base tags are pinned: the build is the same next month, and CI makes local stand-ins
# under exactly these names (scripts/container/build-base-images.sh).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
# Only what the build reads: a change to the docs or tests reuses the compiled binary.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# Cache mounts keep the crate downloads and the compiled dependencies between builds,
# so after a source change only the workspace's own crates are compiled again. The
# target folder is a cache, not a layer: the binary is copied out of it. Cargo tells
# changed sources by modification time, and copied files keep theirs, which can be
# older than what the cache holds from another tree: the workspace's files are touched,
# so its four crates are always compiled afresh (this step runs only when they changed).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    find crates -type f -exec touch {} + \
    && cargo build --release --locked -p faces \
    && strip -o /usr/local/bin/faces target/release/faces

FROM debian:12.15-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data faces \
    && mkdir -p /data && chown faces /data
COPY --from=build /usr/local/bin/faces /usr/local/bin/faces
USER faces
WORKDIR /data
VOLUME /data
ENV FACES_DATA_DIR=/data FACES_HOST=0.0.0.0 FACES_PORT=8282
EXPOSE 8282
# bash's /dev/tcp: no curl in the image. FACES_PORT is read when the check runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${FACES_PORT:-8282} && printf 'GET /healthcheck HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q OK <&3"]
ENTRYPOINT ["faces"]
CMD ["serve"]
