#!/usr/bin/env bash
# keel on a CUDA machine (issue 14, GPU readiness): builds keel against the machine's PyTorch
# (LibTorch 2.x with CUDA and NCCL), runs the CUDA tests (the CUDA path against the CPU path, a
# one-rank NCCL group), then the default job's stages with --device cuda (tokenizer, token files,
# pretrain, SFT, PPO through keel launch with 2 actors, reward model, DPO, held-out evaluation),
# each stage's wall time and peak GPU memory, and one training step at GPT-2 small's width and
# depth beside Python eager on the same GPU.
#   bash bench/gpu_check.sh DEB_DIR OUT_DIR
# DEB_DIR holds the Debian 12 packages keel builds against (DEVELOPERS.md, "Building on a GPU
# machine"); OUT_DIR gets summary.txt (the figures) and the logs. Writes under /tmp/keel-gpu.
set -uo pipefail
cd "$(dirname "$0")/.."
debs=$1
out=$2
mkdir -p "$out"
work=/tmp/keel-gpu
mkdir -p "$work"
sum=$out/summary.txt
say() { echo "$*" | tee -a "$sum"; }
now() { date +%s.%N; }
start=$(now)
since() { awk "BEGIN { printf \"%.1f\", $(now) - $1 }"; }

eval "$(bash bench/gpu_deps.sh unpack "$debs" "$work/deps")"
export PATH="$PATH:/usr/local/cuda/bin"
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
say "$(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))')"
say "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
say "$(g++ --version | head -1); $(nvcc --version | tail -1); nproc $(nproc)"

# ---- build -----------------------------------------------------------------------------------
b=$work/build
if ! cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEEL_BUILD_BENCH=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$KEEL_DEPS_PREFIX" $KEEL_DEPS_CMAKE_FLAGS >"$out/build.log" 2>&1; then
  say "configure FAILED"; tail -40 "$out/build.log"; exit 1
fi
grep "keel:" "$out/build.log" | tee -a "$sum"
if ! ninja -C "$b" -k 0 keel cuda_test >>"$out/build.log" 2>&1; then
  say "build FAILED"; grep -A6 "error" "$out/build.log" | head -120; exit 1
fi
say "build: $(since "$start") s since start"
keel=$b/launch/keel

# ---- CUDA tests --------------------------------------------------------------------------------
(cd "$b/tests" && ./cuda_test) >"$out/tests.log" 2>&1
say "cuda_test: exit $? -- $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/tests.log" | tr '\n' ' ')"
grep -E '^\[  FAILED  \]|Failure|Expected|Which is' "$out/tests.log" | head -20 | tee -a "$sum"

# ---- stages with --device cuda -----------------------------------------------------------------
# stage NAME CMD...: runs CMD, logs to pipeline.log, records wall seconds and the GPU's peak
# memory in use above the idle level (nvidia-smi, sampled every 100 ms).
idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
stage() {
  local name=$1
  shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$work/mem.$name" 2>/dev/null &
  local poll=$! t0
  t0=$(now)
  echo "== $name: $*" >>"$out/pipeline.log"
  "$@" >>"$out/pipeline.log" 2>&1
  local rc=$?
  kill $poll 2>/dev/null
  wait $poll 2>/dev/null
  local peak
  peak=$(sort -n "$work/mem.$name" | tail -1)
  say "$(printf '%-12s exit %d  %6s s  peak GPU memory %s MiB' "$name" $rc "$(since "$t0")" $((${peak:-0} - idle)))"
  return $rc
}

for f in "$debs"/core/fortunes*.deb; do dpkg -x "$f" "$work/fortunes"; done
corpus=$work/fortunes/usr/share/games/fortunes
r=$work/run
mkdir -p "$r"
cuda="--device cuda --threads 8"
dev="--device cuda"
stage tokenizer $keel tokenizer train --input "$corpus" --doc-separator % --vocab-size 4096 --out "$r/tok"
stage tokenize $keel data tokenize --input "$corpus" --doc-separator % --tokenizer "$r/tok.model" --out "$r/data"
stage pretrain $keel pretrain $cuda --data "$r/data" --tokenizer "$r/tok.model" --out "$r/pretrain" \
  --d-model 256 --n-layer 4 --n-head 4 --seq-len 256 --batch-size 8 --steps 300 --lr 2e-3 \
  --warmup-steps 30 --eval-every 100 --checkpoint-every 100 --log-every 25
$keel tasks export --split train --per-family 4000 --out "$r/tasks_train.jsonl" >/dev/null 2>&1
$keel tasks export --split held-out --per-family 50 --out "$r/tasks_heldout.jsonl" >/dev/null 2>&1
stage sft $keel sft $cuda --init "$r/pretrain/model" --train-file "$r/tasks_train.jsonl" \
  --eval-file "$r/tasks_heldout.jsonl" --out "$r/sft" --seq-len 128 --batch-size 16 --steps 1000 --lr 1.5e-3 \
  --warmup-steps 30 --eval-every 500 --checkpoint-every 500 --log-every 100
stage ppo $keel launch --out "$r/ppo" --init "$r/sft/model" --actors 2 --base-port 29600 --threads-per-process 4 \
  --ppo-args "$dev --updates 20 --rollouts-per-update 256 --epochs 1 --minibatches 1 --lr 5e-5 --kl-coef 0.04 --eval-every 20 --eval-per-family 100 --eval-families arithmetic" \
  --actor-args "$dev --batch-prompts 32 --families arithmetic"
for m in pretrain sft ppo/learner; do
  stage "eval_${m%%/*}" $keel eval tasks $cuda --model "$r/$m/model" --per-family 100 --out "$r/eval_${m%%/*}.json"
done
$keel tasks export --pairs --wrong random --split train --per-family 1000 --seed 2 --out "$r/pairs.jsonl" >/dev/null 2>&1
$keel tasks export --pairs --wrong random --split held-out --per-family 100 --seed 2 --out "$r/pairs_held.jsonl" >/dev/null 2>&1
$keel prefs import --input "$r/pairs.jsonl" --tokenizer "$r/sft/model" --out "$r/pairs.h5" >/dev/null 2>&1
$keel prefs import --input "$r/pairs_held.jsonl" --tokenizer "$r/sft/model" --out "$r/pairs_held.h5" >/dev/null 2>&1
stage reward_model $keel reward train $cuda --init "$r/sft/model" --train "$r/pairs.h5" --eval-buffer "$r/pairs_held.h5" \
  --out "$r/rm" --steps 300 --batch-size 16 --lr 2e-4 --warmup-steps 30 --eval-every 300 --log-every 100
stage dpo $keel dpo $cuda --init "$r/sft/model" --train "$r/pairs.h5" --eval-buffer "$r/pairs_held.h5" --out "$r/dpo" \
  --steps 200 --batch-size 16 --lr 2e-5 --beta 0.05 --sft-weight 1.0 --eval-at-start true --eval-every 200 --log-every 50
python3 - "$r" <<'PY' | tee -a "$sum"
import json, sys
r = sys.argv[1]
def last(path, key):
    v = None
    for line in open(path):
        v = json.loads(line).get(key, v)
    return v
acc = {n: json.load(open(f"{r}/eval_{n}.json")) for n in ("pretrain", "sft", "ppo")}
for fam in sorted(acc["sft"]["accuracy"]):
    print(f"  {fam:<11}" + "".join(f"{acc[n]['accuracy'][fam]:>8.2f}" for n in acc))
print(f"  {'mean':<11}" + "".join(f"{acc[n]['mean_accuracy']:>8.2f}" for n in acc), "(pretrained, SFT, PPO: greedy, 100 held-out per family)")
print(f"  pretrain held-out loss {last(f'{r}/pretrain/metrics.jsonl', 'eval/loss'):.3f}; SFT eval loss {last(f'{r}/sft/metrics.jsonl', 'eval/loss'):.3f}")
print(f"  PPO last update: KL {last(f'{r}/ppo/learner/metrics.jsonl', 'ppo/kl')}, held-out arithmetic expected reward "
      f"{last(f'{r}/ppo/learner/metrics.jsonl', 'eval/arithmetic/expected_reward')}")
print(f"  reward model held-out pairwise accuracy {last(f'{r}/rm/metrics.jsonl', 'eval/accuracy')}; "
      f"DPO held-out preference accuracy {last(f'{r}/dpo/metrics.jsonl', 'eval/accuracy')}")
PY

# ---- one training step at GPT-2 small's width and depth (d 768, 12 layers, sequence 512) -----
stage train_124m $keel pretrain $cuda --data "$r/data" --tokenizer "$r/tok.model" --out "$r/size" \
  --d-model 768 --n-layer 12 --n-head 12 --seq-len 512 --batch-size 8 --steps 30 --lr 1e-4 --warmup-steps 5 \
  --eval-every 0 --checkpoint-every 0 --log-every 5
python3 - "$r/size/metrics.jsonl" <<'PY' | tee -a "$sum"
import json, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, "tests/reference")
import models
tok = [json.loads(l).get("train/tokens_per_s") for l in open(sys.argv[1])]
tok = [t for t in tok if t][1:]
keel = sum(tok) / len(tok)
V, d, L, T, B = 4096, 768, 12, 512, 8
cfg = {"model_type": "gpt2", "vocab_size": V, "n_embd": d, "n_layer": L, "n_head": 12, "n_inner": None,
       "n_positions": T, "layer_norm_epsilon": 1e-5}
w = {k: (v * 0.25).cuda().requires_grad_(True) for k, v in models.random_weights(cfg, 0).items()}
opt = torch.optim.AdamW(list(w.values()), lr=1e-4, weight_decay=0.1)
x, y = torch.randint(0, V, (B, T), device="cuda"), torch.randint(0, V, (B, T), device="cuda")
def step():
    opt.zero_grad()
    F.cross_entropy(models.gpt2_forward(w, cfg, x).reshape(-1, V), y.reshape(-1)).backward()
    opt.step()
for _ in range(3): step()
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): step()
torch.cuda.synchronize(); s = (time.perf_counter() - t) / 10
print(f"  train step d=768 L=12 T=512 B=8 V=4096 float32: keel {keel:.0f} tokens/s, Python eager {B * T / s:.0f} tokens/s, "
      f"ratio {keel / (B * T / s):.2f}x; Python peak memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
PY
say "total: $(since "$start") s"
tar czf "$out/runs.tar.gz" -C "$r" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.h5' --exclude=checkpoints . 2>/dev/null
