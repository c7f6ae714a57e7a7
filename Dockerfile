# Multi-stage build: compile in the Rust image, run from a small Debian base as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p faces && strip target/release/faces

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data faces \
    && mkdir -p /data && chown faces /data
COPY --from=build /src/target/release/faces /usr/local/bin/faces
USER faces
WORKDIR /data
ENV FACES_DATA_DIR=/data FACES_HOST=0.0.0.0 FACES_PORT=8282
EXPOSE 8282
HEALTHCHECK CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8282 && printf 'GET /healthcheck HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q OK <&3"]
ENTRYPOINT ["faces"]
CMD ["serve"]
