#!/usr/bin/env bash
# The whole test suite: contract checks, then unit and end-to-end tests against real
# PostgreSQL and Redis (each test makes its own database and Redis prefix, and removes them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh
cargo xtask client --check
cargo test --workspace --no-fail-fast "$@"
