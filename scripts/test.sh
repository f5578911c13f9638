#!/usr/bin/env bash
# The whole test suite: contract checks (a standard OpenAPI validator, the spec's lint, the
# server against the spec, the committed client is up to date), then unit and end-to-end
# tests against real PostgreSQL and Redis (each test makes its own database and Redis prefix,
# and removes them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh
scripts/validate-spec.sh
cargo xtask spec lint
cargo xtask spec check
cargo xtask client --check
cargo test --workspace --no-fail-fast "$@"
