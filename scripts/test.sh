#!/usr/bin/env bash
# Installs what keel needs, builds it and runs every test (unit first, then integration).
# Exit status is non-zero when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export KEEL_TEST_TMP="${KEEL_TEST_TMP:-$(mktemp -d /tmp/keel-tests.XXXXXX)}"
cd build
ctest -L unit --output-on-failure
cd ..
bash scripts/fuzz.sh "${KEEL_FUZZ_SECONDS:-30}"  # every decoder of untrusted bytes, briefly
cd build
ctest -L integration --output-on-failure
