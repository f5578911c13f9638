#!/usr/bin/env bash
# Lists what the tests make and must remove, one per line, sorted (for `comm`): databases
# named exports_test_*, Redis keys under exports:test:, and processes the tests start (worker
# processes, s3s-fs servers on ports of their own, the TLS tests' PostgreSQL and Redis,
# marked exports-tls-test, and scripts/containers.sh's Docker daemon, its state under
# /tmp/exports-containers.*), and the scripts' sandbox directories (scripts/env.sh).
# `.ci/run` compares the list before and after the suite.
set -euo pipefail
{
    psql -h 127.0.0.1 -U postgres -d postgres -Atc \
        "SELECT 'database ' || datname FROM pg_database WHERE datname LIKE 'exports\_test\_%'"
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'exports:test:*' | sed 's/^/redis key /'
    pgrep -af 'exports-server-under-test|exports-test-that-fails|s3s-fs --host 127.0.0.1 --port 0|exports-tls-test|exports-containers\.' |
        sed 's/^/process /' || true
    # The directories of scripts/env.sh's `sandbox` and of scripts/frontend-check.sh.
    find "${TMPDIR:-/tmp}" -maxdepth 1 \( -name 'exports-frontend.*' -o -name 'exports-st.*' \) 2>/dev/null |
        sed 's/^/directory /'
} | sort
