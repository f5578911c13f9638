#!/usr/bin/env bash
# The example page's type check (examples/frontend): its TypeScript types generated afresh
# from spec/openapi.yaml by openapi-typescript, then `tsc --strict`, so that a spec change
# that breaks a TypeScript client fails the tests. Then the same check against the spec with
# a field renamed must fail, and name the page's line: the check can fail. Runs in a copy
# outside the source tree (npm's cache in ~/.cache/exports/npm); the versions are those of
# examples/frontend/package-lock.json.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/exports-frontend.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r "$root/examples/frontend/." "$work/"
rm -rf "$work/node_modules" "$work/src/api.d.ts"
cd "$work"
npm ci --no-audit --no-fund --loglevel=error --cache "${EXPORTS_CACHE_DIR:-$HOME/.cache/exports}/npm" >/dev/null

check() {
    npx --no-install openapi-typescript "$1" -o src/api.d.ts
    npx --no-install tsc --noEmit -p .
}

check "$root/spec/openapi.yaml"
echo "frontend: the example page type-checks against spec/openapi.yaml"

# A field the page reads (the create's answer's `export_id`), renamed in a copy of the spec:
# the check must fail, where the page reads it.
sed '/^    ExportAccepted:/,/^    ExportProgress:/ s/export_id/exportId/g' \
    "$root/spec/openapi.yaml" > renamed.yaml
grep -q '^        exportId:' renamed.yaml
if output="$(check renamed.yaml 2>&1)"; then
    echo "frontend: the type check passed against a spec with export_id renamed" >&2
    exit 1
fi
if ! grep -q 'src/main.ts' <<<"$output"; then
    echo "frontend: the type check failed without naming the page's line:" >&2
    echo "$output" >&2
    exit 1
fi
echo "frontend: a renamed field fails the type check, where the page reads it:"
grep 'src/main.ts' <<<"$output" | head -3
