#!/usr/bin/env bash
# The whole test suite: contract checks (a standard OpenAPI validator, the spec's lint, the
# server against the spec, the committed client is up to date, the example page's TypeScript
# types from the spec pass `tsc --strict`), then unit and end-to-end
# tests against real PostgreSQL, Redis and S3-compatible servers (each test makes its own
# database, Redis prefix and s3s-fs server with its bucket, and removes them), then the
# example page in headless Chromium against the mock and the server, then Schemathesis
# against the real server and the mock.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
phase scripts/services.sh
# The tools (s3s-fs and cargo-deny, minutes of compiling on a new machine) build beside the
# workspace's first build, whose serial stretches (the last crates, linking) leave a core
# idle; the tests need them, the spec checks do not.
scripts/tools.sh &
tools=$!
trap 'kill "$tools" 2>/dev/null || true' EXIT
phase scripts/validate-spec.sh
phase cargo xtask spec lint
phase cargo xtask spec check
phase cargo xtask client --check
# The example page's TypeScript types, generated afresh from the spec, under `tsc --strict`.
phase scripts/frontend-check.sh
phase wait "$tools"
phase cargo test --workspace --no-fail-fast "$@"
# The example page in headless Chromium against the mock and `dev`, with the binaries just built.
phase scripts/frontend-browser.sh
# The server's own tests again, on the server as it ships (without the end-to-end tests'
# `fault-injection`, which Cargo's feature unification gives every `--workspace` build).
phase cargo test -p exports-server --no-fail-fast "$@"
phase scripts/schemathesis.sh
