#!/usr/bin/env bash
# Decoding at real model sizes (issue 14): GPT-2 small (124M) and a Llama-style model with
# grouped-query attention (SmolLM-135M's shape), random init-scale weights in Hugging Face layout
# written by the Python reference. Checks keel's logits against Python's (full and KV-cached), then
# measures memory bandwidth and decode tokens/s at batch 1, 8 and 32, keel beside Python eager,
# with each step's share of the bandwidth roofline (bytes of weights and KV cache read per step ÷
# step time ÷ measured read bandwidth).
#   bash bench/size.sh [WORK_DIR]      (after scripts/build.sh; about 1 GB of models in WORK_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/keel-size}
mkdir -p "$work"
export KEEL_BENCH_THREADS=${KEEL_BENCH_THREADS:-$(nproc)}
kb=build/bench/keel_bench
ref="/usr/bin/python3 tests/reference/reference.py"
py="/usr/bin/python3 bench/reference_bench.py"
out="$work/results.jsonl"
: >"$out"
/usr/bin/python3 - "$work/inputs.safetensors" <<'PY'
import sys, torch
sys.path.insert(0, "tests/reference")
import safetensors_io
torch.manual_seed(3)
safetensors_io.save(sys.argv[1], {"tokens": torch.randint(0, 49152, (2, 48), dtype=torch.int64)})
PY
for m in gpt2-124m llama-135m; do
  [ -f "$work/$m/model.safetensors" ] || $ref make-model $m "$work/$m" 1
  $ref logits "$work/$m" "$work/inputs.safetensors" "$work/$m.logits.safetensors"
  $kb check "$work/$m" "$work/inputs.safetensors" "$work/$m.logits.safetensors" 2>/dev/null | tee -a "$out"
done
$kb bandwidth 2>/dev/null | tee -a "$out"
$py bandwidth | tee -a "$out"
for m in gpt2-124m llama-135m; do
  for b in ${KEEL_SIZE_BATCHES:-1 8 32}; do
    $kb decode "$work/$m" $b 64 float32 2>/dev/null | tee -a "$out"
    $kb decode "$work/$m" $b 64 bfloat16 2>/dev/null | tee -a "$out"
    $py decode "$work/$m" $b 64 | tee -a "$out"
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
bw = max(r["read_gbs"] for r in rows if r["bench"] == "bandwidth") * 1e9
for r in rows:
    if r["bench"] == "bandwidth":
        print(f"bandwidth ({r['impl']}, {r['threads']} threads): read {r['read_gbs']} GB/s, copy {r['copy_gbs']} GB/s")
    if r["bench"] == "check":
        print(f"{r['model'].split('/')[-1]}: logits vs Python max |diff| {r['max_abs_vs_python']:.2g}, "
              f"KV-cached vs full {r['max_abs_cached_vs_full']:.2g}, continuous-batched log-probs vs full "
              f"{r['max_abs_continuous_logp_vs_full']:.2g} (largest logit {r['max_abs_logit']:.3g})")
print("| model | batch | keel weights | keel tok/s | Python tok/s | ratio | keel step | bytes/step | roofline share | bf16 / f32 |")
print("|---|---|---|---|---|---|---|---|---|---|")
dec = [r for r in rows if r["bench"] == "decode"]
for k in (r for r in dec if r["impl"] == "keel"):
    same = lambda r: r["model"] == k["model"] and r["batch"] == k["batch"]
    p = next(r for r in dec if r["impl"] == "python" and same(r))
    f = next(r for r in dec if r["impl"] == "keel" and r["dtype"] == "float32" and same(r))
    b = k["weight_bytes"] + k["kv_bytes"]
    print(f"| {k['model'].split('/')[-1]} | {k['batch']} | {k['dtype']} | {k['tokens_per_s']:.1f} | {p['tokens_per_s']:.1f} | "
          f"{k['tokens_per_s'] / p['tokens_per_s']:.2f}x | {1e3 * k['step_s']:.1f} ms | {b / 1e6:.0f} MB | "
          f"{100 * b / k['step_s'] / bw:.0f}% | {k['tokens_per_s'] / f['tokens_per_s']:.2f}x |")
PY
