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
# A database, Redis prefix and directory of the calling script's own, named after `$1`, removed
# with the processes it adds to `sandbox_pids` when the script exits (scripts/schemathesis.sh,
# scripts/frontend-browser.sh); scripts/test-leftovers.sh lists any left behind.
sandbox() {
    sandbox_dir="$(mktemp -d "${TMPDIR:-/tmp}/exports-$1.XXXXXX")"
    local run
    run="$(tr 'A-Z' 'a-z' <<<"${sandbox_dir##*.}")"
    sandbox_database="exports_test_$1_$run"
    sandbox_prefix="exports:test:$1-$run:"
    sandbox_pids=()
    trap sandbox_remove EXIT
}
sandbox_remove() {
    for pid in "${sandbox_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -h 127.0.0.1 -U postgres -d postgres -qc \
        "DROP DATABASE IF EXISTS \"$sandbox_database\" WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$sandbox_prefix*" |
        xargs -r redis-cli -h 127.0.0.1 -p 6379 del >/dev/null || true
    rm -rf "$sandbox_dir"
}
# Waits (60 s at most) for a line of `$1` (a log) matching the extended regular expression
# `$2`, and prints its first match.
wait_for() {
    local log="$1" pattern="$2"
    for _ in $(seq 600); do
        if grep -qE "$pattern" "$log" 2>/dev/null; then grep -oE "$pattern" "$log" | head -n 1; return 0; fi
        sleep 0.1
    done
    echo "gave up waiting for $pattern in $log:" >&2
    cat "$log" >&2
    return 1
}
