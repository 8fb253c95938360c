#!/usr/bin/env bash
# Builds keel's libFuzzer targets (tests/fuzz, clang with ASan + UBSan) into build-fuzz and runs
# each for SECONDS (default 30) from seeds the targets write themselves; a crash, sanitizer
# report or leak fails the script and leaves the reproducer in build-fuzz/artifacts/.
# CI runs it briefly (scripts/test.sh); bench/fuzz.sh runs it for longer.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
CC=clang CXX=clang++ cmake -S tests/fuzz -B build-fuzz "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc)"
mkdir -p build-fuzz/artifacts
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
for target in fuzz_wire_decode fuzz_safetensors fuzz_token_file fuzz_preference_buffer fuzz_shared_weights; do
  work="build-fuzz/corpus/$target" seeds="build-fuzz/seeds/$target"
  mkdir -p "$work" "$seeds"
  echo "fuzz: $target for ${seconds}s"
  KEEL_FUZZ_SEEDS="$seeds" build-fuzz/$target "$work" "$seeds" -max_total_time="$seconds" -rss_limit_mb=2048 \
    -max_len=65536 -artifact_prefix=build-fuzz/artifacts/$target- -print_final_stats=1 2>build-fuzz/$target.log ||
    { tail -60 build-fuzz/$target.log; echo "fuzz: $target FAILED (reproducer in build-fuzz/artifacts/)"; exit 1; }
  grep -E "^stat::number_of_executed_units|^#[0-9]+ *DONE" build-fuzz/$target.log | tail -2 | sed "s/^/fuzz: $target: /"
done
echo "fuzz: all targets ran clean"
