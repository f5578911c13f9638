# Sourced by the scripts: one build directory outside the clone, reused by every checkout.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/exports/target}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
