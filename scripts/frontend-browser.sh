#!/usr/bin/env bash
# The example page (examples/frontend) in headless Chromium, unchanged, against the mock (with
# its sandbox: a 429, a failed export, its clock) and against `exports-server dev` (a database,
# Redis prefix and storage directory of its own, removed on exit), each on another origin than
# the page, so CORS is exercised. Needs the mock and server binaries of the test build
# (`cargo test --workspace` builds them) and Chromium (scripts/tools.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/env.sh"
bin="$CARGO_TARGET_DIR/debug"
work="$(mktemp -d "${TMPDIR:-/tmp}/exports-frontend.XXXXXX")"
run="$(basename "$work" | tr -c 'a-zA-Z0-9\n' '_')"
database="exports_test_frontend_${run#exports_frontend_}"
prefix="exports:test:frontend-${run#exports_frontend_}:"
pids=()
finish() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true
    redis-cli -h 127.0.0.1 --scan --pattern "${prefix}*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null || true
    rm -rf "$work"
}
trap finish EXIT

cp -r "$root/examples/frontend/." "$work/page"
cd "$work/page"
rm -rf node_modules src/api.d.ts dist
npm ci --no-audit --no-fund --loglevel=error --cache "${EXPORTS_CACHE_DIR:-$HOME/.cache/exports}/npm" >/dev/null
npx --no-install openapi-typescript "$root/spec/openapi.yaml" -o src/api.d.ts >/dev/null
npx --no-install tsc -p . --noEmit false --outDir dist

# Waits until `log` has a line matching `pattern`, then prints its first match.
first_match() {
    local log="$1" pattern="$2"
    for _ in $(seq 600); do
        if grep -qoE "$pattern" "$log" 2>/dev/null; then
            grep -oE "$pattern" "$log" | head -1
            return
        fi
        sleep 0.1
    done
    echo "frontend: nothing matched $pattern in $log:" >&2
    cat "$log" >&2
    return 1
}

python3 -m http.server 0 --bind 127.0.0.1 --directory "$work/page" >"$work/page.log" 2>&1 &
pids+=($!)
page_url="http://127.0.0.1:$(first_match "$work/page.log" 'port [0-9]+' | cut -d' ' -f2)"

EXPORTS_LOG_FORMAT=json "$bin/exports-mock" --spec "$root/spec/openapi.yaml" --port 0 --no-watch --sandbox \
    >"$work/mock.log" 2>&1 &
pids+=($!)
mock="http://$(first_match "$work/mock.log" '"address":"[^"]+"' | cut -d'"' -f4)"
node test/page.mjs "$page_url" "$mock" exk_frontend mock

EXPORTS_LOG_FORMAT=json EXPORTS_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database" \
    "$bin/exports-server" dev --listen 127.0.0.1:0 --redis-prefix "$prefix" \
    --storage-dir "$work/files" --demo-users 200 >"$work/dev.log" 2>&1 &
pids+=($!)
server="http://$(first_match "$work/dev.log" '"local_addr":"[^"]+"' | cut -d'"' -f4)"
key="$(first_match "$work/dev.log" 'exk_[A-Za-z0-9_-]+')"
node test/page.mjs "$page_url" "$server" "$key" server
