#!/usr/bin/env bash
# The main job on the embedded default: installs and builds keel, then runs the pipeline on the
# fortunes corpus (Debian package "fortunes") and the built-in tasks:
#   tokenizer -> token files -> pretrain -> SFT -> held-out task accuracy before/after -> samples.
# Everything lands in runs/default (override with KEEL_RUN_DIR). About 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
keel=build/launch/keel
run=${KEEL_RUN_DIR:-runs/default}
corpus=/usr/share/games/fortunes
mkdir -p "$run"

step() { printf '\n== %s\n' "$*"; }

step "tokenizer: SentencePiece BPE, 4096 pieces, on $corpus"
[ -f "$run/tok.model" ] || $keel tokenizer train --input $corpus --doc-separator % --vocab-size 4096 --out "$run/tok"

step "token files with a held-out split"
$keel data tokenize --input $corpus --doc-separator % --tokenizer "$run/tok.model" --out "$run/data" | tee "$run/data.txt"

step "pretrain: GPT-2 style, d=256, 4 layers (resumes if interrupted)"
$keel pretrain --data "$run/data" --tokenizer "$run/tok.model" --out "$run/pretrain" \
  --d-model 256 --n-layer 4 --n-head 4 --seq-len 256 --batch-size 8 --steps 300 --lr 2e-3 \
  --warmup-steps 30 --eval-every 100 --checkpoint-every 100 --log-every 25

step "built-in tasks: train and held-out splits"
$keel tasks export --split train --per-family 4000 --out "$run/tasks_train.jsonl"
$keel tasks export --split held-out --per-family 50 --out "$run/tasks_heldout.jsonl"

step "SFT on the tasks, from the pretrained model"
$keel sft --init "$run/pretrain/model" --train-file "$run/tasks_train.jsonl" --eval-file "$run/tasks_heldout.jsonl" \
  --out "$run/sft" --seq-len 128 --batch-size 16 --steps 1000 --lr 1.5e-3 --warmup-steps 30 \
  --eval-every 500 --checkpoint-every 500 --log-every 100

step "held-out task accuracy (greedy, 100 per family)"
$keel eval tasks --model "$run/pretrain/model" --per-family 100 --out "$run/eval_pretrain.json" > /dev/null
$keel eval tasks --model "$run/sft/model" --per-family 100 --out "$run/eval_sft.json" > /dev/null
/usr/bin/python3 - "$run" <<'PY'
import json, sys
run = sys.argv[1]
a = json.load(open(f"{run}/eval_pretrain.json")); b = json.load(open(f"{run}/eval_sft.json"))
def last_eval(path):
    loss = None
    for line in open(path):
        j = json.loads(line)
        loss = j.get("eval/loss", loss)
    return loss
print(f"{'family':<12}{'pretrained':>12}{'SFT':>8}")
for fam in sorted(a["accuracy"]):
    print(f"{fam:<12}{a['accuracy'][fam]:>12.2f}{b['accuracy'][fam]:>8.2f}")
print(f"{'mean':<12}{a['mean_accuracy']:>12.2f}{b['mean_accuracy']:>8.2f}")
print(f"pretrain held-out loss {last_eval(f'{run}/pretrain/metrics.jsonl'):.3f} nats/token")
PY

step "samples from the SFT model"
$keel generate --model "$run/sft/model" --temperature 0 --max-new-tokens 24 \
  --prompt "Compute 13 + 6." --prompt "Reverse the words: apple river stone" \
  --prompt "Sort the words: pearl maple cloud" --prompt "Count the words: honey piano lemon ocean" \
  --out "$run/samples.jsonl" 2>/dev/null
cat "$run/samples.jsonl"
echo
echo "done: $run (metrics: $run/*/metrics.jsonl; tensorboard --logdir $run)"
