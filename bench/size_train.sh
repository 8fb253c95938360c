#!/usr/bin/env bash
# Training at GPT-2 small's shape (issue 14, part 5): one pretraining step (forward, backward,
# AdamW) at d=768, 12 layers, sequence 512, vocabulary 50257, batch B (default 4): keel without
# and with activation checkpointing beside Python PyTorch eager on the same step, against the
# machine's measured sgemm peak. Each run is its own process, so peak RSS is that step's.
#   bash bench/size_train.sh [B]      (after scripts/build.sh; about 10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-4}
export KEEL_BENCH_THREADS=${KEEL_BENCH_THREADS:-$(nproc)}
kb=build/bench/keel_bench
py="/usr/bin/python3 bench/reference_bench.py"
out=$(mktemp /tmp/keel-size-train.XXXXXX.jsonl)
$kb sgemm 2>/dev/null | tee -a "$out"
$kb train 768 12 512 "$B" 50257 0 2>/dev/null | tee -a "$out"
$kb train 768 12 512 "$B" 50257 1 2>/dev/null | tee -a "$out"
$py train 768 12 512 "$B" 50257 | tee -a "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
peak = next(r for r in rows if r["bench"] == "sgemm")["gflops"]
plain = next(r for r in rows if r["bench"] == "train" and r["impl"] == "keel" and not r["activation_checkpointing"])
ckpt = next(r for r in rows if r["bench"] == "train" and r["impl"] == "keel" and r["activation_checkpointing"])
py = next(r for r in rows if r["bench"] == "train" and r["impl"] == "python")
print(f"sgemm peak {peak:.0f} GFLOP/s")
print("| run | step | tokens/s | vs Python | model GFLOP/s | share of sgemm peak | peak RSS |")
print("|---|---|---|---|---|---|---|")
for name, r in (("keel", plain), ("keel, activation checkpointing", ckpt), ("Python eager", py)):
    print(f"| {name} | {r['step_s']:.2f} s | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / py['tokens_per_s']:.2f}x | "
          f"{r['model_gflops']:.0f} | {100 * r['model_gflops'] / peak:.0f}% | {r['peak_rss_mb']:.0f} MB |")
print(f"checkpointing: peak RSS {100 * (1 - ckpt['peak_rss_mb'] / plain['peak_rss_mb']):.0f}% lower, "
      f"step {100 * (ckpt['step_s'] / plain['step_s'] - 1):.0f}% longer")
PY
