#!/usr/bin/env bash
# Installs what keel needs, builds it and runs every test: unit (no Python or Node), reference
# (against PyTorch, h5py, sentencepiece in /usr/bin/python3 and GPT-2's BPE in node), the fuzz
# targets briefly, then integration.
# Exit status is non-zero when anything fails, or when a label has no tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export KEEL_TEST_TMP="${KEEL_TEST_TMP:-$(mktemp -d /tmp/keel-tests.XXXXXX)}"
cd build
ctest -L unit --output-on-failure --no-tests=error
ctest -L reference --output-on-failure --no-tests=error
cd ..
bash scripts/fuzz.sh "${KEEL_FUZZ_SECONDS:-10}"  # every decoder of untrusted bytes, briefly (bench/fuzz.sh: longer)
cd build
ctest -L integration --output-on-failure --no-tests=error
