#!/usr/bin/env bash
# Installs what the tests and local runs need beyond Rust, PostgreSQL and Redis, once per
# machine: the S3-compatible server s3s-fs (built from crates.io into ~/.cache/exports, about
# 2 minutes cold on 2 cores; 0.14.1 is the last release that builds with Rust 1.95),
# cargo-deny (the dependency checks of `.ci/run`, likewise into ~/.cache/exports), promtool
# (Debian's `prometheus` package), which checks the alerting rules, and Chromium (Debian's
# `chromium`), in which a test loads the reference page.
set -euo pipefail
S3S_ROOT="${EXPORTS_S3S_ROOT:-$HOME/.cache/exports/s3s-fs}"
DENY_ROOT="${EXPORTS_CARGO_DENY_ROOT:-$HOME/.cache/exports/cargo-deny}"

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# Installs a Debian package, refreshing the package lists once if they are stale.
debian_package() {
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$1" \
        >/dev/null || {
        sudo_if_needed apt-get update -q >/dev/null
        sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$1" >/dev/null
    }
}

# The Debian packages download and unpack while the Rust tools compile (one waits on the
# network and the disk, the other on the CPU).
debian_packages() {
    if ! command -v promtool >/dev/null; then
        echo "installing promtool (Debian package prometheus)"
        debian_package prometheus
    fi
    if ! command -v chromium >/dev/null; then
        echo "installing Chromium (Debian package chromium)"
        debian_package chromium
    fi
}
debian_packages &
debian=$!

if [ ! -x "$S3S_ROOT/bin/s3s-fs" ]; then
    echo "installing s3s-fs 0.14.1 into $S3S_ROOT"
    # Its own temporary build directory: the project's build cache stays the project's.
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --root "$S3S_ROOT" \
        s3s-fs@0.14.1 --features binary
fi

if [ ! -x "$DENY_ROOT/bin/cargo-deny" ]; then
    echo "installing cargo-deny 0.20.2 into $DENY_ROOT"
    # A debug build: cargo-deny's release profile is fat LTO in one codegen unit, minutes
    # more to build, while the checks `.ci/run` asks of it take about a second either way.
    env -u CARGO_TARGET_DIR cargo install --quiet --locked --debug --root "$DENY_ROOT" cargo-deny@0.20.2
fi

wait "$debian"
