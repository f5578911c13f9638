#!/usr/bin/env bash
# Runs the service on local defaults: migrates, seeds demo users, prints a demo API key, and
# runs the API on 127.0.0.1:8080 with a worker in the same process, storing files in a local
# S3-compatible server (s3s-fs, started by scripts/s3.sh). Extra arguments go to
# `exports-server dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/services.sh
scripts/tools.sh
export EXPORTS_S3_BUCKET EXPORTS_S3_ENDPOINT EXPORTS_S3_ACCESS_KEY_ID EXPORTS_S3_SECRET_ACCESS_KEY
export EXPORTS_S3_PATH_STYLE=true
scripts/s3.sh
exec cargo run --quiet -p exports-server -- dev "$@"
