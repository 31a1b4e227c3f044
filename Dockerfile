# rtap: the native host, its Wasm plugins and the dashboard in one image.
#
#   docker build -t rtap .
#   docker run --rm -p 3000:3000 -v rtap-data:/data rtap
#
# The full stack (Kafka, InfluxDB, Prometheus, Grafana, Kafka UI) is
# docker-compose.yml; see deploy/README.md. Needs BuildKit (the default builder
# of Docker 23+) for the cache mounts.

# ---------------------------------------------------------------------------
# 1. Rust: the plugins (wasm32-wasip2 components) and the `host` binary.
FROM rust:1.95-bookworm AS rust-build

# libclang + cmake: bindgen and the C/C++ builds of rocksdb and librdkafka;
# libssl-dev + pkg-config: librdkafka's TLS and SASL.
# python3: scripts/lib.sh reads `cargo metadata` with it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libclang-dev cmake python3 libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2

WORKDIR /src
COPY . .

# The registry and target folders are cache mounts (kept between builds, not
# in the layer), so everything that must survive is copied to /out.
RUN --mount=type=cache,id=rtap-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=rtap-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=rtap-target,target=/src/target \
    bash scripts/build-plugins.sh \
 && cargo build --release --locked -p rtap-host --bin host --bin rtap-gen \
 && mkdir -p /out/plugins \
 && cp target/release/host target/release/rtap-gen /out/ \
 && cp plugins/*.wasm /out/plugins/

# ---------------------------------------------------------------------------
# 2. Node: the React dashboard (dashboard/dist).
FROM node:20-bookworm-slim AS dashboard-build

WORKDIR /src/dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN --mount=type=cache,id=rtap-npm,target=/root/.npm \
    npm ci --no-audit --no-fund
COPY dashboard/ ./
RUN npm run build

# ---------------------------------------------------------------------------
# 3. Runtime.
FROM debian:bookworm-slim

# ca-certificates, libssl3: TLS to Kafka/InfluxDB; curl: the health check.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 rtap \
 && useradd --system --uid 10001 --gid rtap --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin rtap \
 && mkdir -p /app/plugins /app/dashboard /data \
 && chown rtap:rtap /data /app/plugins

COPY --from=rust-build /out/host /out/rtap-gen /app/
# The plugins folder is writable by the host: an upload through the API is
# written there, so a restarted container runs the same code.
COPY --from=rust-build --chown=rtap:rtap /out/plugins/ /app/plugins/
COPY --from=dashboard-build /src/dashboard/dist/ /app/dashboard/dist/

# Fail the build, not the first start, if the binary needs a shared library
# that this slim base lacks (librdkafka, rocksdb and friends link dynamically
# against the C/C++ runtime).
RUN if ldd /app/host | grep 'not found'; then \
        echo 'host: shared libraries missing in the runtime image' >&2; exit 1; \
    fi \
 && /app/host --version

USER rtap:rtap
WORKDIR /app
# State, checkpoints, dead letters and late events.
VOLUME ["/data"]
EXPOSE 3000

# /health answers 503 when the pipeline is down (curl -f fails on it).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS --max-time 4 -o /dev/null http://127.0.0.1:3000/health || exit 1

ENTRYPOINT ["/app/host"]
CMD ["--plugins", "/app/plugins", \
     "--listen", "0.0.0.0:3000", \
     "--data-dir", "/data", \
     "--dashboard-dir", "/app/dashboard/dist"]
