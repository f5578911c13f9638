# Sourced by the scripts: one build directory outside the clone, reused by every checkout.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/exports/target}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
# The local S3-compatible server of scripts/s3.sh (development only; not secrets).
EXPORTS_S3_BUCKET="${EXPORTS_S3_BUCKET:-exports}"
EXPORTS_S3_ENDPOINT="${EXPORTS_S3_ENDPOINT:-http://127.0.0.1:8014}"
EXPORTS_S3_ACCESS_KEY_ID="${EXPORTS_S3_ACCESS_KEY_ID:-exports-dev}"
EXPORTS_S3_SECRET_ACCESS_KEY="${EXPORTS_S3_SECRET_ACCESS_KEY:-exports-dev-secret}"
# Runs a command and says how long it took, so that a slow run shows where its time went.
phase() {
    local started=$SECONDS
    "$@"
    echo "phase: $* took $((SECONDS - started)) s" >&2
}
