#!/usr/bin/env bash
# The container images and docker-compose.yml, end to end, on a Docker daemon of this script's
# own (started here, stopped on exit, its state under ~/.cache/exports/docker):
#
# 1. The base images the Dockerfile names are made here, since no registry is reachable:
#    `debian:bookworm-slim` from debootstrap, and `rust:1.95-slim-bookworm` from the same tree
#    with gcc and this machine's own Rust toolchain. Both carry this machine's CA bundle, which
#    trusts the network's egress proxy (the build fetches crates through it). Kept for the next
#    run, as the Rust tools are.
# 2. The images `exports-server`, `exports-mock` and `exports-s3-dev` are built from the
#    Dockerfile as a user would build them.
# 3. The mock's image, as `docker run -p` runs it: healthy by its HEALTHCHECK, then an export
#    created, polled to `done` and downloaded.
# 4. docker-compose.yml with tests/containers/compose.host.yml over it: PostgreSQL and Redis are
#    this machine's (their official images cannot be made here), on a database and Redis prefix
#    of this run's own; the S3 server, the migration, the demo key, the API and two workers are
#    the stack's own. The API healthy by its HEALTHCHECK, then an export of the demo users from create to download, through the key
#    the `demo` service printed.
#
# Everything the run made (containers, networks, volumes, the three images, the database, the
# Redis keys, the temporary directory) is removed on exit, passed or failed.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
source scripts/env.sh
cache="${EXPORTS_CACHE_DIR:-$HOME/.cache/exports}"
run_dir=$(mktemp -d /tmp/exports-containers.XXXXXX)
run_id=$(basename "$run_dir" | tr 'A-Z' 'a-z' | tr -dc 'a-z0-9')
# The classic builder: BuildKit needs the buildx plugin with newer docker clients, and
# docker-compose v1 builds with the classic one too.
export DOCKER_HOST="unix://$run_dir/docker.sock" DOCKER_BUILDKIT=0
images=(exports-server exports-mock exports-s3-dev)
database="exports_test_containers_$run_id"
export COMPOSE_PROJECT_NAME="exports-test-$run_id"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
say() { echo "containers: $*" >&2; }
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# Waits for a container's HEALTHCHECK to say `healthy` (within a generous bound), or fails.
wait_healthy() {
    local health=
    for _ in $(seq 600); do
        health=$(docker inspect --format '{{.State.Health.Status}}' "$1")
        [ "$health" = healthy ] && return
        sleep 0.2
    done
    say "$1 is $health, not healthy"
    return 1
}

# Creates a CSV export on the API at $1 with the key $2, polls it until it is final, and
# downloads it into $3 once `done`; prints its id.
export_through() {
    local id status=
    id=$(curl -sf -X POST "$1/api/v1/exports/users" -H "Authorization: Bearer $2" \
        -H 'Content-Type: application/json' -d '{"format":"csv"}' | json_field export_id) || return
    for _ in $(seq 300); do
        status=$(curl -sf "$1/api/v1/exports/users/$id" -H "Authorization: Bearer $2" | json_field status)
        case "$status" in done | failed | cancelled) break ;; esac
        sleep 0.2
    done
    [ "$status" = done ] || { say "export $id on $1 is $status, not done"; return 1; }
    curl -sf "$1/api/v1/exports/users/$id/download" -H "Authorization: Bearer $2" -o "$3" || return
    echo "$id"
}

cleanup() {
    local status=$?
    set +e
    if [ -S "$run_dir/docker.sock" ]; then
        [ -f "$run_dir/compose.yml" ] &&
            docker-compose -f "$run_dir/compose.yml" down --volumes --remove-orphans >/dev/null 2>&1
        docker rm -f "exports-mock-$run_id" >/dev/null 2>&1
        docker rmi "${images[@]}" >/dev/null 2>&1
        docker image prune --force >/dev/null 2>&1
    fi
    if [ -f "$run_dir/docker.pid" ]; then
        kill "$(cat "$run_dir/docker.pid")" 2>/dev/null
        for _ in $(seq 100); do [ -f "$run_dir/docker.pid" ] || break; sleep 0.1; done
    fi
    # What dockerd leaves mounted (its network namespace) once stopped.
    grep " $run_dir/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount 2>/dev/null
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1
    redis-cli -h 127.0.0.1 --scan --pattern "exports:test:containers-$run_id:*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null
    rm -rf "$run_dir"
    exit "$status"
}
trap cleanup EXIT

for package in docker.io docker-compose debootstrap; do
    dpkg -s "$package" >/dev/null 2>&1 || {
        say "installing $package (Debian)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package" >/dev/null
    }
done

say "starting dockerd"
mkdir -p "$cache/docker"
dockerd --data-root "$cache/docker" --exec-root "$run_dir/exec" --pidfile "$run_dir/docker.pid" \
    --host "$DOCKER_HOST" >"$run_dir/dockerd.log" 2>&1 &
for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
docker info >/dev/null || { cat "$run_dir/dockerd.log" >&2; exit 1; }

# 1. The base images.
if ! docker image inspect debian:bookworm-slim rust:1.95-slim-bookworm >/dev/null 2>&1; then
    say "making debian:bookworm-slim and rust:1.95-slim-bookworm (debootstrap)"
    root="$run_dir/bookworm"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$root" http://deb.debian.org/debian \
        >"$run_dir/debootstrap.log" 2>&1 || { tail -20 "$run_dir/debootstrap.log" >&2; exit 1; }
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - debian:bookworm-slim >/dev/null
    apt_in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -o Dpkg::Use-Pty=0 "$@"; }
    apt_in_root install -y -q --no-install-recommends gcc libc6-dev >"$run_dir/gcc.log" 2>&1 || {
        apt_in_root update -q >>"$run_dir/gcc.log" 2>&1
        apt_in_root install -y -q --no-install-recommends gcc libc6-dev >>"$run_dir/gcc.log" 2>&1
    } || { tail -20 "$run_dir/gcc.log" >&2; exit 1; }
    chroot "$root" gcc --version >/dev/null
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    toolchain=$(rustc --print sysroot)
    mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo/bin"
    tar -C "$toolchain" --exclude=share/doc -c . | tar -C "$root/usr/local/rust" -x
    ln -s /usr/local/rust/bin/cargo /usr/local/rust/bin/rustc "$root/usr/local/cargo/bin/"
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        - rust:1.95-slim-bookworm >/dev/null
fi

# 2. The images, as a user builds them.
mb() { awk -v bytes="$1" 'BEGIN { printf "%.1f MB", bytes / 1e6 }'; }
base_size=$(docker image inspect --format '{{.Size}}' debian:bookworm-slim)
for target in server mock s3-dev; do
    say "building exports-$target"
    started=$SECONDS
    docker build --target "$target" --tag "exports-$target" . >"$run_dir/build-$target.log" 2>&1 ||
        { tail -40 "$run_dir/build-$target.log" >&2; exit 1; }
    size=$(docker image inspect --format '{{.Size}}' "exports-$target")
    say "exports-$target built in $((SECONDS - started)) s: $(mb "$size"), $(mb $((size - base_size))) over the base image"
done

# 3. The mock's image.
mock_port=$(free_port)
docker run --detach --name "exports-mock-$run_id" --publish "127.0.0.1:$mock_port:4010" \
    --env EXPORTS_MOCK_SPEED=1000 exports-mock >/dev/null
wait_healthy "exports-mock-$run_id"
export_id=$(export_through "http://127.0.0.1:$mock_port" exk_any "$run_dir/mock.csv")
[ -s "$run_dir/mock.csv" ] || { say "the mock's download is empty"; exit 1; }
say "the mock's image: export $export_id created, done and downloaded ($(wc -l <"$run_dir/mock.csv") lines)"

# 4. The compose stack.
export EXPORTS_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$database"
export EXPORTS_TEST_REDIS_PREFIX="exports:test:containers-$run_id:" EXPORTS_TEST_API_PORT=$(free_port)
export EXPORTS_TEST_S3_PORT=$(free_port)
# The two files merged, less the published ports, which a container on the host's network
# cannot have (and compose v1 cannot take away in an override).
docker-compose -f docker-compose.yml -f tests/containers/compose.host.yml config |
    python3 -c 'import sys, yaml
config = yaml.safe_load(sys.stdin)
for service in config["services"].values():
    service.pop("ports", None)
yaml.safe_dump(config, sys.stdout)' >"$run_dir/compose.yml"
compose() { docker-compose -f "$run_dir/compose.yml" "$@"; }
compose up --detach --no-build --no-deps s3
compose run --rm --no-deps migrate >"$run_dir/migrate.log" 2>&1 || { cat "$run_dir/migrate.log" >&2; exit 1; }
compose run --rm --no-deps demo demo --demo-users 50 >"$run_dir/demo.log" 2>&1 ||
    { cat "$run_dir/demo.log" >&2; exit 1; }
key=$(grep -o 'exk_[A-Za-z0-9_-]*' "$run_dir/demo.log" | head -n 1)
[ -n "$key" ] || { say "no demo key printed"; cat "$run_dir/demo.log" >&2; exit 1; }
compose up --detach --no-build --no-deps api worker-1 worker-2
wait_healthy "$(compose ps -q api)" || { compose logs >&2; exit 1; }
export_id=$(export_through "http://127.0.0.1:$EXPORTS_TEST_API_PORT" "$key" "$run_dir/stack.csv") ||
    { compose logs >&2; exit 1; }
users=$(psql -At -h 127.0.0.1 -U postgres -d "$database" -c 'SELECT count(*) FROM users')
lines=$(wc -l <"$run_dir/stack.csv")
[ "$lines" = $((users + 1)) ] || { say "the stack's file has $lines lines for $users users"; exit 1; }
# The download_url a client gets works from the host, without a key (signed for the name
# EXPORTS_S3_PUBLIC_ENDPOINT gives S3).
url=$(curl -sf "http://127.0.0.1:$EXPORTS_TEST_API_PORT/api/v1/exports/users/$export_id" \
    -H "Authorization: Bearer $key" | json_field download_url)
curl -sf "$url" -o "$run_dir/stack-link.csv" && cmp -s "$run_dir/stack.csv" "$run_dir/stack-link.csv" ||
    { say "the download_url $url did not give the file"; exit 1; }
say "the compose stack: export $export_id of $users users created, done and downloaded (also by its download_url)"
