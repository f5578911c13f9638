# The images of the exports service, from the official Rust and Debian images:
#
#   docker build --target server -t exports-server .   # serve, work, migrate, keys
#   docker build --target mock -t exports-mock .       # the mock, with the spec it serves
#
# docs/operations.md#containers says how to run them; docker-compose.yml runs the whole service.
# Both images share one build stage, so building the second takes seconds.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p exports-server -p exports-mock \
    && install -D -t /out target/release/exports-server target/release/exports-mock

# What both images run on: Debian slim, the CA certificates (S3, webhooks, TLS to PostgreSQL
# and Redis) and an unprivileged user. No secret is inside: every setting is an environment
# variable given when the container starts.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin exports
COPY deploy/container/http-ok /usr/local/bin/

FROM runtime AS server
COPY --from=build /out/exports-server /usr/local/bin/
# Files stay in this directory when no S3 bucket is configured (mount a volume there).
RUN install -d -o exports -g exports /var/lib/exports
ENV EXPORTS_LISTEN=0.0.0.0:8080 \
    EXPORTS_STORAGE_DIR=/var/lib/exports
USER exports
EXPOSE 8080
# Ready: PostgreSQL, Redis and the storage answer. For `work`, `migrate` and `keys` turn it
# off (docker-compose.yml does): they serve no HTTP.
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s \
    CMD http-ok "${EXPORTS_LISTEN##*:}" /health/ready
ENTRYPOINT ["exports-server"]
CMD ["serve"]

FROM runtime AS mock
COPY --from=build /out/exports-mock /usr/local/bin/
# The spec it serves; mount another at the same path to serve yours (it is reloaded when the
# file changes).
COPY spec/openapi.yaml /spec/openapi.yaml
ENV EXPORTS_MOCK_SPEC=/spec/openapi.yaml \
    EXPORTS_MOCK_HOST=0.0.0.0 \
    EXPORTS_MOCK_PORT=4010
USER exports
EXPOSE 4010
HEALTHCHECK --interval=10s --timeout=6s --start-period=5s \
    CMD http-ok "$EXPORTS_MOCK_PORT" /health/live
ENTRYPOINT ["exports-mock"]

# A local S3-compatible server for docker-compose.yml's first look (s3s-fs, the server the
# tests use), with the bucket `exports`. Not for production: point EXPORTS_S3_* at your S3.
# Last in the file, so that building `server` or `mock` never builds it.
FROM rust:1.95-slim-bookworm AS s3-build
RUN cargo install --locked --root /out s3s-fs@0.14.1 --features binary

FROM runtime AS s3-dev
COPY --from=s3-build /out/bin/s3s-fs /usr/local/bin/
RUN install -d -o exports -g exports /data /data/exports
USER exports
EXPOSE 9000
ENTRYPOINT ["s3s-fs", "--host", "0.0.0.0", "--port", "9000"]
