#!/usr/bin/env bash
# Actors at real model sizes (issue 14, parts 4 and 7), on the models bench/size.sh writes:
#  - continuous batching: 8 prompts x 8 responses with long-tailed lengths (median 20, mean ~33,
#    up to 256; bench/size_bench.cc), static batching 32 at a time against 32 continuous rows;
#  - weights: GPT-2 small (124M, 498 MB) published to 2 actor processes, bound to shared memory,
#    copying from it, and in chunks over loopback TCP, against one memcpy of the same bytes; the
#    chunks against plain ZeroMQ messages of the same bytes over loopback (the transport alone).
#   bash bench/size_actors.sh [WORK_DIR]      (after bench/size.sh made the models in WORK_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/keel-size}
export KEEL_BENCH_THREADS=${KEEL_BENCH_THREADS:-$(nproc)}
kb=build/bench/keel_bench
out=$(mktemp /tmp/keel-size-actors.XXXXXX.jsonl)
for m in gpt2-124m llama-135m; do
  [ -f "$work/$m/model.safetensors" ] || { echo "no $work/$m: run bash bench/size.sh $work first" >&2; exit 2; }
  $kb continuous "$work/$m" 32 8 8 2>/dev/null | tee -a "$out"
done
for path in shm shm-copy chunks; do
  $kb weights 768 12 "$path" 50257 2>/dev/null | tee -a "$out"
done
$kb weights 768 12 chunks 50257 1 2>/dev/null | tee -a "$out"  # one receiver: the transfer alone
# The transport's own ceiling in the same run: the same bytes as plain 4 MiB ZeroMQ messages.
for a in 2 1; do $kb loopback 495 $a 2>/dev/null | tee -a "$out"; done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("| model | responses | lengths: mean / median / p90 / max | static 32: s, steps, useful tok/s | continuous 32 rows: s, steps, useful tok/s | ratio |")
print("|---|---|---|---|---|---|")
for r in (r for r in rows if r["bench"] == "continuous"):
    print(f"| {r['model'].split('/')[-1]} | {r['responses']} ({r['responses'] // r['group']} prompts x {r['group']}) | "
          f"{r['length_mean']} / {r['length_median']} / {r['length_p90']} / {r['length_max']} | "
          f"{r['static_s']:.1f}, {r['static_steps']}, {r['static_tokens_per_s']:.1f} | "
          f"{r['continuous_s']:.1f}, {r['continuous_steps']}, {r['continuous_tokens_per_s']:.1f} | **{r['ratio']:.2f}x** |")
print()
print("| path | actors | publish | publish -> actors hold it | vs memcpy | GB/s per actor (after publish) | an actor's load | load vs memcpy | first version |")
print("|---|---|---|---|---|---|---|---|---|")
for r in (r for r in rows if r["bench"] == "weights"):
    print(f"| {r['path']} | {r['actors']} | {1e3 * r['publish_s']:.0f} ms | {1e3 * r['publish_to_actors_s']:.0f} ms | "
          f"{r['ratio_to_memcpy']:.2f}x | {r['gb_per_s']:.2f} ({r['gb_per_s_after_publish']:.2f}) | {1e3 * r['actor_load_s']:.0f} ms | "
          f"{r['actor_load_to_memcpy']:.2f}x | {r['first_version_s']:.2f} s |")
weights = [r for r in rows if r["bench"] == "weights"]
print(f"memcpy of {weights[-1]['bytes'] / 1e6:.0f} MB: {1e3 * weights[-1]['memcpy_s']:.0f} ms")
for r in (r for r in rows if r["bench"] == "loopback"):
    chunks = [w for w in weights if w["path"].startswith("chunks") and w["actors"] == r["receivers"]]
    share = (f", keel's chunks at {chunks[0]['gb_per_s'] / r['gb_per_s_each']:.0%} of it from publication, "
             f"{chunks[0]['gb_per_s_after_publish'] / r['gb_per_s_each']:.0%} after it" if chunks else "")
    print(f"plain ZeroMQ over loopback TCP to {r['receivers']} receiver(s): {r['gb_per_s_each']:.2f} GB/s each{share}")
PY
