#!/usr/bin/env bash
# Runs the service on local defaults: migrates, seeds demo users, prints a demo API key and
# serves the API on 127.0.0.1:8080. Extra arguments go to `exports-server dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh
exec cargo run --quiet -p exports-server -- dev "$@"
