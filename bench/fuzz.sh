#!/usr/bin/env bash
# The fuzz targets of tests/fuzz for longer than CI gives them: SECONDS per target (default 1800).
# The corpus grows in build-fuzz/corpus/ across runs; crashes land in build-fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash scripts/fuzz.sh "${1:-1800}"
