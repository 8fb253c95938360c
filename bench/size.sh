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
# Each measurement is repeated (KEEL_SIZE_REPEATS, 3) in interleaved rounds and the median
# taken: on a shared VM the bandwidth and a step's time drift by 20-30% within minutes, and the
# rounds spread that drift over keel, bf16 and Python alike.
for r in $(seq "${KEEL_SIZE_REPEATS:-3}"); do
  $kb bandwidth 2>/dev/null | tee -a "$out"
  $py bandwidth | tee -a "$out"
  for m in gpt2-124m llama-135m; do
    for b in ${KEEL_SIZE_BATCHES:-1 8 32}; do
      $kb decode "$work/$m" $b 64 float32 2>/dev/null | tee -a "$out"
      $kb decode "$work/$m" $b 64 bfloat16 2>/dev/null | tee -a "$out"
      $py decode "$work/$m" $b 64 | tee -a "$out"
    done
  done
done
# bfloat16 against float32 at batch 1 in one process, paired round by round (the drift of a
# shared VM between separate runs moves that ratio by a fifth).
for m in gpt2-124m llama-135m; do
  $kb decode_pair "$work/$m" 1 "${KEEL_SIZE_PAIR_ROUNDS:-24}" 2>/dev/null | tee -a "$out"
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def median_row(group, key):
    group = sorted(group, key=lambda r: r[key])
    return group[(len(group) - 1) // 2]
bws = [r for r in rows if r["bench"] == "bandwidth"]
for impl in sorted({r["impl"] for r in bws}):
    g = [r for r in bws if r["impl"] == impl]
    print(f"bandwidth ({impl}, {g[0]['threads']} threads, {len(g)} runs): read {[r['read_gbs'] for r in g]} GB/s "
          f"(median {statistics.median(r['read_gbs'] for r in g)}), copy median {statistics.median(r['copy_gbs'] for r in g)} GB/s")
bw = max(statistics.median(r["read_gbs"] for r in bws if r["impl"] == impl) for impl in {r["impl"] for r in bws}) * 1e9
for r in rows:
    if r["bench"] == "check":
        print(f"{r['model'].split('/')[-1]}: logits vs Python max |diff| {r['max_abs_vs_python']:.2g}, "
              f"KV-cached vs full {r['max_abs_cached_vs_full']:.2g}, continuous-batched log-probs vs full "
              f"{r['max_abs_continuous_logp_vs_full']:.2g} (largest logit {r['max_abs_logit']:.3g})")
for r in rows:
    if r["bench"] == "decode_pair":
        print(f"{r['model'].split('/')[-1]} batch {r['batch']}, bfloat16 against float32 in one process ({r['rounds']} paired "
              f"rounds of 16 steps): {r['speedup_median']:.2f}x (q1-q3 {r['speedup_q1']:.2f}-{r['speedup_q3']:.2f}), "
              f"steps {1e3 * r['float32_step_s']:.1f} / {1e3 * r['bfloat16_step_s']:.1f} ms")
print("Medians of the runs. Roofline share: against the median read bandwidth of the separate bandwidth runs, and against")
print("the read bandwidth measured in the decoding process itself just before and after its steps (median, then each run).")
print("| model | batch | keel weights | keel tok/s | Python tok/s | ratio | keel step | bytes/step | roofline share | share, same process | bf16 / f32 |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
dec = [r for r in rows if r["bench"] == "decode"]
def med(impl, model, batch, dtype=None):
    return median_row([r for r in dec if r["impl"] == impl and r["model"] == model and r["batch"] == batch and
                       (dtype is None or r["dtype"] == dtype)], "tokens_per_s")
seen = set()
for k in (r for r in dec if r["impl"] == "keel"):
    if (k["model"], k["batch"], k["dtype"]) in seen:
        continue
    seen.add((k["model"], k["batch"], k["dtype"]))
    k = med("keel", k["model"], k["batch"], k["dtype"])
    p = med("python", k["model"], k["batch"])
    f = med("keel", k["model"], k["batch"], "float32")
    b = k["weight_bytes"] + k["kv_bytes"]
    shares = sorted(r["roofline_share"] for r in dec if r["impl"] == "keel" and r["model"] == k["model"] and
                    r["batch"] == k["batch"] and r["dtype"] == k["dtype"])
    print(f"| {k['model'].split('/')[-1]} | {k['batch']} | {k['dtype']} | {k['tokens_per_s']:.1f} | {p['tokens_per_s']:.1f} | "
          f"{k['tokens_per_s'] / p['tokens_per_s']:.2f}x | {1e3 * k['step_s']:.1f} ms | {b / 1e6:.0f} MB | "
          f"{100 * b / k['step_s'] / bw:.0f}% | {100 * shares[(len(shares) - 1) // 2]:.0f}% "
          f"({'/'.join(f'{100 * x:.0f}' for x in shares)}) | {k['tokens_per_s'] / f['tokens_per_s']:.2f}x |")
PY
