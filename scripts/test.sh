#!/usr/bin/env bash
# The whole test suite: contract checks (a standard OpenAPI validator, the spec's lint, the
# server against the spec, the committed client is up to date), then unit and end-to-end
# tests against real PostgreSQL, Redis and S3-compatible servers (each test makes its own
# database, Redis prefix and s3s-fs server with its bucket, and removes them), then
# Schemathesis against the real server and the mock.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh
scripts/tools.sh
scripts/validate-spec.sh
cargo xtask spec lint
cargo xtask spec check
cargo xtask client --check
cargo test --workspace --no-fail-fast "$@"
# The server's own tests again, on the server as it ships (without the end-to-end tests'
# `fault-injection`, which Cargo's feature unification gives every `--workspace` build).
cargo test -p exports-server --no-fail-fast "$@"
scripts/schemathesis.sh
