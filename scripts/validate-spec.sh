#!/usr/bin/env bash
# Validates spec/openapi.yaml with a standard OpenAPI 3.0 validator (openapi-spec-validator,
# from PyPI, in a virtualenv kept outside the clone).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${EXPORTS_CACHE_DIR:-$HOME/.cache/exports}/spec-validator"
if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet openapi-spec-validator==0.9.0
fi
"$venv/bin/openapi-spec-validator" --schema 3.0.0 spec/openapi.yaml
