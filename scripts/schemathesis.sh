#!/usr/bin/env bash
# Schemathesis (PyPI, in a virtualenv under ~/.cache/exports) with its default checks and
# every phase, stateful included, against the real server as it ships (`dev`, on a database and Redis
# prefix of its own, with its demo key) and against the mock (with a key it names). Both
# must give 0 failures. The database, keys, processes and files are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
venv="${EXPORTS_CACHE_DIR:-$HOME/.cache/exports}/schemathesis"
if [ ! -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet schemathesis==4.32.5
fi
# The binaries as they ship: built alone, without the fault injection that the test package
# turns on for every `--workspace` build (Cargo unifies features across what it builds).
cargo build --quiet -p exports-server -p exports-mock --bins
bin="$CARGO_TARGET_DIR/debug"
if "$bin/exports-server" work --hold-after-rows 1 --help >/dev/null 2>&1; then
    echo "exports-server was built with the test-only fault injection" >&2
    exit 1
fi
sandbox st
# The failed-authentication limit is off: schemathesis sends bad keys on purpose, and the
# 429s that would follow from 127.0.0.1 would hide the rest of the run.
EXPORTS_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$sandbox_database" RUST_LOG=warn,exports_server=info \
    "$bin/exports-server" dev --listen 127.0.0.1:0 --demo-users 100 --redis-prefix "$sandbox_prefix" \
    --storage-dir "$sandbox_dir/files" --max-failed-auth-per-minute 0 >"$sandbox_dir/server.log" 2>&1 &
sandbox_pids+=($!)
"$bin/exports-mock" --spec spec/openapi.yaml --port 0 --no-watch \
    --key "exk_schemathesis=exports:read,exports:write,webhooks:manage" >"$sandbox_dir/mock.log" 2>&1 &
sandbox_pids+=($!)
server="$(wait_for "$sandbox_dir/server.log" '"local_addr":"[0-9.:]*"' | cut -d'"' -f4)"
key="$(wait_for "$sandbox_dir/server.log" 'exk_[A-Za-z0-9_-]*')"
mock="$(wait_for "$sandbox_dir/mock.log" '"address":"[0-9.:]*"' | cut -d'"' -f4)"

status=0
repository="$PWD"
# Schemathesis keeps a cache (`.schemathesis/`) in its working directory: the run's own.
cd "$sandbox_dir"
for target in "server http://$server $key" "mock http://$mock exk_schemathesis"; do
    read -r name url token <<<"$target"
    echo "schemathesis against the $name ($url)"
    "$venv/bin/st" --config-file "$repository/scripts/schemathesis.toml" run "$repository/spec/openapi.yaml" \
        --url "$url" -H "Authorization: Bearer $token" --max-examples 30 --workers 1 --seed 20261124 \
        --no-color || status=1
done
cd "$repository"
exit "$status"
