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
sandbox frontend

cp -r "$root/examples/frontend/." "$sandbox_dir/page"
cd "$sandbox_dir/page"
rm -rf node_modules src/api.d.ts dist
npm ci --no-audit --no-fund --loglevel=error --cache "${EXPORTS_CACHE_DIR:-$HOME/.cache/exports}/npm" >/dev/null
npx --no-install openapi-typescript "$root/spec/openapi.yaml" -o src/api.d.ts >/dev/null
npx --no-install tsc -p . --noEmit false --outDir dist

python3 -m http.server 0 --bind 127.0.0.1 --directory "$sandbox_dir/page" >"$sandbox_dir/page.log" 2>&1 &
sandbox_pids+=($!)
page_url="http://127.0.0.1:$(wait_for "$sandbox_dir/page.log" 'port [0-9]+' | cut -d' ' -f2)"

EXPORTS_LOG_FORMAT=json "$bin/exports-mock" --spec "$root/spec/openapi.yaml" --port 0 --no-watch --sandbox \
    >"$sandbox_dir/mock.log" 2>&1 &
sandbox_pids+=($!)
mock="http://$(wait_for "$sandbox_dir/mock.log" '"address":"[^"]+"' | cut -d'"' -f4)"
node test/page.mjs "$page_url" "$mock" exk_frontend mock

EXPORTS_LOG_FORMAT=json EXPORTS_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$sandbox_database" \
    "$bin/exports-server" dev --listen 127.0.0.1:0 --redis-prefix "$sandbox_prefix" \
    --storage-dir "$sandbox_dir/files" --demo-users 200 >"$sandbox_dir/dev.log" 2>&1 &
sandbox_pids+=($!)
server="http://$(wait_for "$sandbox_dir/dev.log" '"local_addr":"[^"]+"' | cut -d'"' -f4)"
key="$(wait_for "$sandbox_dir/dev.log" 'exk_[A-Za-z0-9_-]+')"
node test/page.mjs "$page_url" "$server" "$key" server
