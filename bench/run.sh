#!/usr/bin/env bash
# Runs keel's benchmarks beside the Python PyTorch eager baseline, same shapes, same thread count,
# one process per measurement (so peak memory is per process), and prints the ratios.
#   bash bench/run.sh            (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export KEEL_BENCH_THREADS=${KEEL_BENCH_THREADS:-$(nproc)}
kb=build/bench/keel_bench
py="/usr/bin/python3 bench/reference_bench.py"
out=$(mktemp)
for mode in sgemm "train 512 8 256 8 8192" "generate 256 4 8 128"; do
  $kb $mode 2>/dev/null | tee -a "$out"
  $py $mode | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
get = lambda b, i: next(r for r in rows if r["bench"] == b and r["impl"] == i)
peak = max(get("sgemm", "keel")["gflops"], get("sgemm", "python")["gflops"])
tk, tp = get("train", "keel"), get("train", "python")
gk, gp = get("generate", "keel"), get("generate", "python")
print(f"\nsgemm peak (2048^3, float32): {peak:.1f} GFLOP/s")
print(f"train  d=512 L=8 T=256 B=8 V=8192: keel {tk['tokens_per_s']:.0f} tok/s, python {tp['tokens_per_s']:.0f} tok/s, "
      f"ratio {tk['tokens_per_s']/tp['tokens_per_s']:.2f}x; keel {tk['model_gflops']:.1f} GFLOP/s = {100*tk['model_gflops']/peak:.0f}% of peak "
      f"(python {100*tp['model_gflops']/peak:.0f}%)")
print(f"memory of the training process: keel growth {tk['rss_growth_mb']:.0f} MB, python growth {tp['rss_growth_mb']:.0f} MB, "
      f"ratio {tk['rss_growth_mb']/tp['rss_growth_mb']:.2f}x (peak RSS {tk['peak_rss_mb']:.0f} vs {tp['peak_rss_mb']:.0f} MB)")
print(f"generate d=256 L=4 B=8 N=128: keel {gk['tokens_per_s']:.0f} tok/s, python {gp['tokens_per_s']:.0f} tok/s, "
      f"ratio {gk['tokens_per_s']/gp['tokens_per_s']:.2f}x")
PY
