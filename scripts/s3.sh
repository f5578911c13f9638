#!/usr/bin/env bash
# Starts a local S3-compatible server (s3s-fs) for `scripts/dev.sh` unless one answers:
# 127.0.0.1:8014, files under data/s3, bucket `exports`, keys from scripts/env.sh. Tests do not
# use it: each test starts its own s3s-fs on a free port with its own directory. It keeps
# running after dev.sh stops (`pkill -f "s3s-fs --host 127.0.0.1 --port 8014"` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
S3S="${EXPORTS_S3S_ROOT:-$HOME/.cache/exports/s3s-fs}/bin/s3s-fs"
port="${EXPORTS_S3_ENDPOINT##*:}"

if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    mkdir -p "data/s3/$EXPORTS_S3_BUCKET"
    echo "starting s3s-fs on 127.0.0.1:$port (files in data/s3)"
    nohup "$S3S" --host 127.0.0.1 --port "$port" --access-key "$EXPORTS_S3_ACCESS_KEY_ID" \
        --secret-key "$EXPORTS_S3_SECRET_ACCESS_KEY" data/s3 >data/s3.log 2>&1 &
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
fi
mkdir -p "data/s3/$EXPORTS_S3_BUCKET"
