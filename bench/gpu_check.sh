#!/usr/bin/env bash
# keel on a CUDA machine (issue 14, GPU readiness): builds keel against the machine's PyTorch
# (LibTorch 2.x with CUDA and NCCL), runs the CUDA tests (the CUDA path against the CPU path, a
# one-rank NCCL group), then the default job's stages with --device cuda (tokenizer, token files,
# pretrain, SFT, PPO through keel launch with 2 bfloat16 actors, reward model, DPO, held-out
# evaluation; two data-parallel SFT ranks where there are two GPUs), each stage's wall time and peak GPU
# memory, and at GPT-2 small's width and depth one training step and decoding at batch 1 and 32,
# each beside Python eager on the same GPU.
#   bash bench/gpu_check.sh DEB_DIR OUT_DIR
# DEB_DIR holds the Debian 12 packages keel builds against (DEVELOPERS.md, "Building on a GPU
# machine"); OUT_DIR gets summary.txt (the figures) and the logs. Writes under /tmp/keel-gpu.
# A device machine is lent for minutes, so the script keeps to a time budget: each stage runs
# under `timeout`, and stages that would start after KEEL_GPU_DEADLINE seconds (default 480) are
# skipped and named, so a slow build or a hung stage still returns every figure taken so far.
# KEEL_GPU_DEVICE=cpu KEEL_GPU_BUILD=build KEEL_GPU_QUICK=1 runs the same stages on the CPU with
# an existing build and a few steps each: a check of the script's flags before spending GPU time.
set -uo pipefail
cd "$(dirname "$0")/.."
debs=$1
out=$2
device=${KEEL_GPU_DEVICE:-cuda}
deadline=${KEEL_GPU_DEADLINE:-480}
quick=${KEEL_GPU_QUICK:-0}
mkdir -p "$out"
work=${KEEL_GPU_WORK:-/tmp/keel-gpu}
mkdir -p "$work"
sum=$out/summary.txt
say() { echo "$*" | tee -a "$sum"; }
now() { date +%s.%N; }
start=$(now)
since() { awk "BEGIN { printf \"%.1f\", $(now) - $1 }"; }
left() { awk "BEGIN { printf \"%d\", $deadline - ($(now) - $start) }"; }
# steps N: N, or a few under KEEL_GPU_QUICK.
steps() { if [ "$quick" = 1 ]; then echo $(($1 < 4 ? $1 : 4)); else echo "$1"; fi; }
gpu() { [ "$device" != cpu ]; }
# The Python with PyTorch: the image's on a GPU machine, Debian's python3-torch here.
py=$(gpu && echo python3 || echo /usr/bin/python3)

if gpu; then
  KEEL_IMAGE_CXX=${CXX:-}
  eval "$(bash bench/gpu_deps.sh unpack "$debs" "$work/deps")"
  export PATH="$PATH:/usr/local/cuda/bin"
  torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  say "$(python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0), "cxx11 abi", torch.compiled_with_cxx11_abi())')"
  say "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
  # An image may set CXX to a toolchain of its own (/opt/gcc/bin/g++ 13) while its programs load
  # the system's libstdc++: keel built with it exported a copy of std::ostream::sentry, and
  # SentencePiece's trainer (loaded with RTLD_DEEPBIND) crashed inside that copy. Build with the
  # system's compiler, whose libstdc++ is the one that runs (KEEL_GPU_CXX overrides).
  cxx=${KEEL_GPU_CXX:-$([ -x /usr/bin/g++ ] && echo /usr/bin/g++ || echo "${CXX:-g++}")}
  export CXX=$cxx CC=${cxx%++}cc
  [ -x "$CC" ] || CC=gcc
  say "CXX $CXX (image's CXX ${KEEL_IMAGE_CXX:-unset})"
  say "$($CXX --version | head -1); $(nvcc --version | tail -1); $(cmake --version | head -1); nproc $(nproc); $(ldd --version | head -1)"
  # Debian's libraries (Boost, SentencePiece, protobuf) use the C++11 string ABI; a LibTorch
  # built with the old one cannot link with them, and building would only spend the lease.
  if [ "$(python3 -c 'import torch; print(int(torch.compiled_with_cxx11_abi()))')" != 1 ]; then
    say "this LibTorch uses the pre-C++11 string ABI: Debian 12's libraries cannot link with it (DEVELOPERS.md)"
    exit 1
  fi
fi

# ---- build -----------------------------------------------------------------------------------
if ! gpu && [ -z "${KEEL_GPU_BUILD:-}" ]; then
  echo "KEEL_GPU_DEVICE=cpu runs an existing build: set KEEL_GPU_BUILD=build (the folder scripts/build.sh made)" >&2
  exit 2
fi
b=${KEEL_GPU_BUILD:-$work/build}
if [ -n "${KEEL_GPU_BUILD:-}" ]; then
  say "using the build in $b"
elif ! cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKEEL_BUILD_BENCH=OFF \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$KEEL_DEPS_PREFIX" $KEEL_DEPS_CMAKE_FLAGS >"$out/build.log" 2>&1; then
  say "configure FAILED"; tail -40 "$out/build.log"; exit 1
else
  grep "keel:" "$out/build.log" | tee -a "$sum"
  if ! ninja -C "$b" -k 0 keel cuda_test >>"$out/build.log" 2>&1; then
    say "build FAILED"; grep -B2 -A12 "error" "$out/build.log" | head -300 | tee "$out/build_errors.txt"
    # A test that does not compile still leaves keel's stages worth running.
    [ -x "$b/launch/keel" ] || exit 1
  fi
  say "build: $(since "$start") s since start"
fi
keel=$b/launch/keel
ldd "$keel" | grep -E "not found|gomp|omp\.so|torch_cuda|nccl" | tee -a "$sum"

# ---- CUDA tests --------------------------------------------------------------------------------
(cd "$b/tests" && timeout 180 ./cuda_test) >"$out/tests.log" 2>&1
say "cuda_test: exit $? -- $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/tests.log" | tr '\n' ' ')"
grep -E '^\[  FAILED  \]|Failure|Expected|Which is|what\(\)' "$out/tests.log" | head -20 | tee -a "$sum"

# symbolise: crash-report lines on stdin, each frame followed by the function (and file:line, where
# the module has debug information) addr2line finds at its offset (5 s at most a frame: LibTorch's
# CUDA library is a gigabyte), or its symbol demangled.
symbolise() {
  local l f o
  while IFS= read -r l; do
    if [[ $l =~ ([^[:space:]\(]+)\(\+(0x[0-9a-f]+)\) ]] && command -v addr2line >/dev/null; then
      f=${BASH_REMATCH[1]} o=${BASH_REMATCH[2]}
      echo "$l  => $(timeout 5 addr2line -f -C -e "$f" "$o" 2>/dev/null | paste -sd ' ')"
    elif [[ $l =~ \(([A-Za-z_][^+\)]*)\+0x ]] && command -v c++filt >/dev/null; then
      echo "$l  => $(c++filt "${BASH_REMATCH[1]}")"
    else
      echo "$l"
    fi
  done
}

# ---- stages with --device cuda -----------------------------------------------------------------
# stage NAME CAP CMD...: runs CMD under `timeout` (CAP seconds, or what is left before the deadline
# if less), logs to pipeline.log, records wall seconds and the GPU's peak memory in use above the
# idle level (nvidia-smi, sampled every 100 ms); a stage that cannot start before the deadline is
# skipped and named.
: >>"$out/pipeline.log"
idle=0
gpu && idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
stage() {
  local name=$1 cap=$2
  shift 2
  local budget
  budget=$(left)
  [ "$budget" -lt "$cap" ] && cap=$budget
  if [ "$cap" -lt 5 ]; then
    say "$(printf '%-12s skipped: past the %d s deadline' "$name" "$deadline")"
    return 1
  fi
  local poll=""
  if gpu; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$work/mem.$name" 2>/dev/null &
    poll=$!
  fi
  local t0
  t0=$(now)
  local from
  from=$(($(wc -l <"$out/pipeline.log" 2>/dev/null || echo 0) + 1))
  echo "== $name: $*" >>"$out/pipeline.log"
  timeout --kill-after=10 "$cap" "$@" >>"$out/pipeline.log" 2>&1
  local rc=$?
  if [ -n "$poll" ]; then kill "$poll" 2>/dev/null; wait "$poll" 2>/dev/null; fi
  local peak=0 top
  top=$(sort -n "$work/mem.$name" 2>/dev/null | tail -1)
  gpu && [[ $top =~ ^[0-9]+$ ]] && peak=$((top - idle))
  say "$(printf '%-12s exit %d  %6s s  peak GPU memory %s MiB%s' "$name" $rc "$(since "$t0")" "$peak" \
    "$({ [ $rc = 124 ] || [ $rc = 137 ]; } && echo "  (stopped at its $cap s limit)")")"
  [ $rc = 0 ] || tail -5 "$out/pipeline.log" | sed 's/^/    /' | tee -a "$sum"
  # keel prints where it crashed and its stack (core/crash_report.h): keep that, symbolised.
  if [ $rc -gt 128 ] && [ $rc != 137 ]; then
    tail -n +"$from" "$out/pipeline.log" | grep -A40 "fatal signal" | head -42 | symbolise | sed 's/^/    /' | tee -a "$sum"
  fi
  return $rc
}

# The corpus: the fortunes packages, unpacked with the rest on a GPU machine.
corpus=$work/deps/usr/share/games/fortunes
if ! gpu; then
  mkdir -p "$work/fortunes"
  for f in "$debs"/core/fortunes*.deb; do dpkg -x "$f" "$work/fortunes"; done
  corpus=$work/fortunes/usr/share/games/fortunes
fi
r=$work/run
rm -rf "$r"
mkdir -p "$r"
run="--device $device --threads 8"
dev="--device $device"
if ! stage tokenizer 60 $keel tokenizer train --input "$corpus" --doc-separator % --vocab-size 4096 --out "$r/tok"; then
  # Where training the tokenizer fails, the stack says why, and the stages after it still run on
  # a tokenizer keel trained elsewhere on the same corpus (DEB_DIR/tok.model, when carried).
  if command -v gdb >/dev/null && [ "$(left)" -gt 30 ]; then
    timeout "$(left)" gdb -q -batch -ex run -ex bt --args $keel tokenizer train --input "$corpus" --doc-separator % \
      --vocab-size 4096 --out "$r/tok_gdb" 2>&1 | grep -E "^#|signal" | head -30 | tee -a "$sum"
  fi
  [ -f "$debs/tok.model" ] && cp "$debs/tok.model" "$r/tok.model" && say "  using the carried tokenizer $debs/tok.model"
fi
stage tokenize 60 $keel data tokenize --input "$corpus" --doc-separator % --tokenizer "$r/tok.model" --out "$r/data"

# ---- one training step at GPT-2 small's width and depth (d 768, 12 layers, sequence 512) -----
# First among the measured stages: it is the figure a short lease should not miss.
if stage train_124m 90 $keel pretrain $run --data "$r/data" --tokenizer "$r/tok.model" --out "$r/size" \
  --d-model 768 --n-layer 12 --n-head 12 --seq-len 512 --batch-size 8 --steps "$(steps 30)" --lr 1e-4 \
  --warmup-steps 2 --eval-every 0 --checkpoint-every 0 --log-every 2 && gpu; then
  timeout "$(($(left) < 90 ? $(left) : 90))" python3 - "$r/size/metrics.jsonl" <<'PY' 2>&1 | tee -a "$sum"
import json, sys, time, torch, torch.nn.functional as F
sys.path.insert(0, "tests/reference")
import models
tok = [json.loads(l).get("train/tokens_per_s") for l in open(sys.argv[1])]
tok = [t for t in tok if t][2:]
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
print(f"  train step d=768 L=12 T=512 B=8 V=4096 float32 (TF32 off in both): keel {keel:.0f} tokens/s, "
      f"Python eager {B * T / s:.0f} tokens/s, ratio {keel / (B * T / s):.2f}x; "
      f"Python peak memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated, "
      f"{torch.cuda.max_memory_reserved() / 2**20:.0f} MiB reserved (keel's figure above is nvidia-smi's, CUDA context included)")
PY
fi

# ---- decoding at GPT-2 small's shape: 32 prompts, 128 new tokens each, one batch --------------
stage init_124m 60 $keel model init --family gpt2 --d-model 768 --n-layer 12 --n-head 12 \
  --tokenizer "$r/tok.model" --out "$r/gpt2_124m_shape"
printf '{"prompt": "Tell me about the sea, number %d."}\n' $(seq 32) >"$r/prompts.jsonl"
for bs in 1 32; do
  n=$([ "$bs" = 1 ] && echo 4 || echo 32)
  head -$n "$r/prompts.jsonl" >"$r/prompts_$bs.jsonl"
  t0=$(now)
  if stage "decode_b$bs" 60 $keel generate $run --model "$r/gpt2_124m_shape" --prompts "$r/prompts_$bs.jsonl" \
    --batch-size "$bs" --max-new-tokens "$(steps 128)" --stop-at-eos 0 --template none --out "$r/gen_$bs.jsonl"; then
    say "  decode batch $bs: $n x $(steps 128) tokens in $(since "$t0") s wall; $(grep -o "^generated .*" "$out/pipeline.log" | tail -1)"
    # Python eager on the same device and model: KV cache grown with torch.cat, tokens drawn on the
    # CPU as keel draws them; new tokens/s over prefill and steps, as keel's line above.
    if [ -f "$r/gpt2_124m_shape/model.safetensors" ] && [ "$(left)" -gt 30 ]; then
      KEEL_BENCH_DEVICE=$device timeout "$(($(left) < 60 ? $(left) : 60))" $py bench/reference_bench.py decode \
        "$r/gpt2_124m_shape" "$bs" "$(steps 128)" 2>&1 | tail -1 | sed 's/^/  Python eager: /' | tee -a "$sum"
    fi
  fi
done

# ---- the default job's stages --------------------------------------------------------------------
# model_of RUN: the model a finished RUN wrote, or, where it died before writing it, its latest
# checkpoint (a model directory too), so one crash at a stage's end does not stop every stage after it.
model_of() {
  if [ ! -f "$1/model/model.safetensors" ] && [ -f "$1/checkpoints/latest" ]; then
    echo "$1/checkpoints/$(cat "$1/checkpoints/latest")"
    echo "  ${1#"$r"/}/model missing: the stages after it start from ${1#"$r"/}/checkpoints/$(cat "$1/checkpoints/latest")" >>"$sum"
  else
    echo "$1/model"
  fi
}
stage pretrain 90 $keel pretrain $run --data "$r/data" --tokenizer "$r/tok.model" --out "$r/pretrain" \
  --d-model 256 --n-layer 4 --n-head 4 --seq-len 256 --batch-size 8 --steps "$(steps 300)" --lr 2e-3 \
  --warmup-steps 3 --eval-every 100 --checkpoint-every 100 --log-every 25
$keel tasks export --split train --per-family 4000 --out "$r/tasks_train.jsonl" >/dev/null 2>&1
$keel tasks export --split held-out --per-family 50 --out "$r/tasks_heldout.jsonl" >/dev/null 2>&1
pretrain_model=$(model_of "$r/pretrain")
stage sft 90 $keel sft $run --init "$pretrain_model" --train-file "$r/tasks_train.jsonl" \
  --eval-file "$r/tasks_heldout.jsonl" --out "$r/sft" --seq-len 128 --batch-size 16 --steps "$(steps 600)" --lr 1.5e-3 \
  --warmup-steps 3 --eval-every 300 --checkpoint-every 300 --log-every 100
sft_model=$(model_of "$r/sft")
stage ppo 120 $keel launch --out "$r/ppo" --init "$sft_model" --actors 2 --base-port 29600 --threads-per-process 4 \
  --ppo-args "$dev --updates $(steps 12) --rollouts-per-update 256 --epochs 1 --minibatches 1 --lr 5e-5 --kl-coef 0.04 --eval-every $(steps 12) --eval-per-family 100 --eval-families arithmetic" \
  --actor-args "$dev --batch-prompts 32 --families arithmetic --decode-dtype bfloat16"
# A process keel launch started writes its crash report to its own log, and may be restarted.
if grep -qs "fatal signal" "$r"/ppo/logs/*.log; then
  for f in "$r"/ppo/logs/*.log; do
    grep -q "fatal signal" "$f" || continue
    say "  ${f#"$r"/}: $(grep -c "fatal signal" "$f") fatal signal(s); the first:"
    grep -m1 -A40 "fatal signal" "$f" | head -42 | symbolise | sed 's/^/    /' | tee -a "$sum"
  done
fi
ppo_model=$(model_of "$r/ppo/learner")
for m in pretrain sft ppo; do
  case $m in pretrain) model=$pretrain_model ;; sft) model=$sft_model ;; *) model=$ppo_model ;; esac
  stage "eval_$m" 40 $keel eval tasks $run --model "$model" --per-family 100 --out "$r/eval_$m.json"
done
$keel tasks export --pairs --wrong random --split train --per-family 1000 --seed 2 --out "$r/pairs.jsonl" >/dev/null 2>&1
$keel tasks export --pairs --wrong random --split held-out --per-family 100 --seed 2 --out "$r/pairs_held.jsonl" >/dev/null 2>&1
$keel prefs import --input "$r/pairs.jsonl" --tokenizer "$sft_model" --out "$r/pairs.h5" >/dev/null 2>&1
$keel prefs import --input "$r/pairs_held.jsonl" --tokenizer "$sft_model" --out "$r/pairs_held.h5" >/dev/null 2>&1
stage reward_model 60 $keel reward train $run --init "$sft_model" --train "$r/pairs.h5" --eval-buffer "$r/pairs_held.h5" \
  --out "$r/rm" --steps "$(steps 300)" --batch-size 16 --lr 2e-4 --warmup-steps 3 --eval-every "$(steps 300)" --log-every 100
stage dpo 60 $keel dpo $run --init "$sft_model" --train "$r/pairs.h5" --eval-buffer "$r/pairs_held.h5" --out "$r/dpo" \
  --steps "$(steps 200)" --batch-size 16 --lr 2e-5 --beta 0.05 --sft-weight 1.0 --eval-at-start true --eval-every "$(steps 200)" --log-every 50

# ---- data parallel: two SFT ranks on one node (NCCL, a GPU each), where the machine has two GPUs -
# (on the CPU check, two Gloo ranks: the same script). Each rank names the GPU it computes on.
gpus=0
gpu && gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | wc -l)  # whole GPUs, not MIG slices
if [ "$gpus" -ge 2 ] || ! gpu; then
  # Both ranks in the background; the first to fail stops the other (it would wait in the
  # rendezvous until the stage's limit).
  {
    printf 'cmd=(%q sft %s --threads 4 --init %q --train-file %q --out %q' "$keel" "$dev" "$pretrain_model" \
      "$r/tasks_train.jsonl" "$r/sft_dp2"
    printf ' --seq-len 128 --batch-size 16 --steps %d --lr 1.5e-3 --warmup-steps 3 --eval-every 0 --checkpoint-every 0 --log-every 25)\n' \
      "$(steps 100)"
    cat <<'SH'
pids=()
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
for rank in 1 0; do
  WORLD_SIZE=2 RANK=$rank LOCAL_RANK=$rank MASTER_ADDR=127.0.0.1 MASTER_PORT=29710 "${cmd[@]}" &
  pids+=($!)
done
for _ in 1 2; do wait -n || exit $?; done
SH
  } >"$work/sft_dp2.sh"
  from=$(wc -l <"$out/pipeline.log")
  if stage sft_2_ranks 90 bash "$work/sft_dp2.sh"; then
    say "  2 ranks: $(tail -n +"$from" "$out/pipeline.log" | grep -o "^computing on .*" | sort | paste -sd ' ' | grep . || echo "on $device");" \
      "last $(grep -o '"train/loss":[0-9.e+-]*' "$r/sft_dp2/metrics.jsonl" | tail -1)"
  fi
fi
python3 - "$r" <<'PY' 2>&1 | tee -a "$sum"
import json, os, sys
r = sys.argv[1]
def last(path, key):
    v = None
    if os.path.exists(path):
        for line in open(path):
            v = json.loads(line).get(key, v)
    return v
acc = {n: json.load(open(f"{r}/eval_{n}.json")) for n in ("pretrain", "sft", "ppo") if os.path.exists(f"{r}/eval_{n}.json")}
if "sft" in acc:
    for fam in sorted(acc["sft"]["accuracy"]):
        print(f"  {fam:<11}" + "".join(f"{acc[n]['accuracy'][fam]:>8.2f}" for n in acc))
    print(f"  {'mean':<11}" + "".join(f"{acc[n]['mean_accuracy']:>8.2f}" for n in acc), f"({', '.join(acc)}: greedy, 100 held-out per family)")
print(f"  pretrain held-out loss {last(f'{r}/pretrain/metrics.jsonl', 'eval/loss')}; SFT eval loss {last(f'{r}/sft/metrics.jsonl', 'eval/loss')}")
ppo = f"{r}/ppo/learner/metrics.jsonl"
print(f"  PPO last update: KL {last(ppo, 'ppo/kl')}, version {last(ppo, 'ppo/version')}, held-out arithmetic "
      f"accuracy {last(ppo, 'eval/accuracy/arithmetic')}, expected reward {last(ppo, 'eval/expected_reward')}; "
      f"bfloat16 actors' log-prob gap to the learner: mean {last(ppo, 'ppo/logp_gap_mean')}, max {last(ppo, 'ppo/logp_gap_max')}")
if os.path.exists(ppo):
    ups = [u for u in map(json.loads, open(ppo)) if "ppo/time/cycle" in u][1:]
    if ups:
        phases = sorted(k for k in ups[0] if k.startswith("ppo/time/"))
        print("  PPO seconds per update (mean over", len(ups), "after the first):",
              ", ".join(f"{k[9:]} {sum(u.get(k, 0) for u in ups) / len(ups):.3f}" for k in phases))
print(f"  reward model held-out pairwise accuracy {last(f'{r}/rm/metrics.jsonl', 'eval/accuracy')}; "
      f"DPO held-out preference accuracy {last(f'{r}/dpo/metrics.jsonl', 'eval/accuracy')}")
PY
say "total: $(since "$start") s"
tar czf "$out/runs.tar.gz" -C "$r" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.h5' --exclude=checkpoints . 2>/dev/null
