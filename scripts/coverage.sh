#!/usr/bin/env bash
# Line coverage of server/ under the whole test suite (cargo-tarpaulin, LLVM engine), with
# PostgreSQL, Redis and the test tools set up as for the tests. Installs cargo-tarpaulin if it
# is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh
scripts/tools.sh
command -v cargo-tarpaulin >/dev/null || cargo install cargo-tarpaulin@0.37.5 --locked
cargo tarpaulin --engine llvm --workspace --exclude xtask \
    --include-files 'server/src/*' --out Stdout --skip-clean \
    --target-dir "${CARGO_TARGET_DIR%/target}/coverage" "$@"
