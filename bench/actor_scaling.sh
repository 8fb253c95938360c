#!/usr/bin/env bash
# Actor scaling (issue 5): PPO rollouts/s with 1, 2 and 4 actors against one learner through
# `keel launch` (one LibTorch thread per process), and the share of each update the learner spends
# waiting for rollouts. Updates 2..N of 64 rollouts (PPO, one epoch of one minibatch).
#   bash bench/actor_scaling.sh [SFT_MODEL_DIR]    (default runs/default/sft/model)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-runs/default/sft/model}
updates=${UPDATES:-10}
keel=${KEEL:-build/launch/keel}
out=${OUT:-$(mktemp -d /tmp/keel-actor-scaling.XXXXXX)}
[ -f "$model/model.safetensors" ] || { echo "no SFT model in $model (run scripts/run_default.sh, or pass one)" >&2; exit 2; }
port=48400
for n in ${ACTORS:-1 2 4}; do
  $keel launch --out "$out/actors-$n" --init "$model" --actors "$n" --threads-per-process 1 --base-port $port \
    --ppo-args "--updates $updates --rollouts-per-update 64 --epochs 1 --minibatches 1 --eval-every 0 --eval-per-family 2 \
      --eval-samples 1 --eval-families sort --lr 5e-5 --kl-coef 0.02" \
    --actor-args "--batch-prompts 16 --families sort" > "$out/actors-$n.log" 2>&1
  port=$((port + 20))
done
/usr/bin/python3 - "$out" ${ACTORS:-1 2 4} <<'PY'
import glob, json, re, sys
out, ns = sys.argv[1], sys.argv[2:]
base = None
for n in ns:
    rows = [json.loads(l) for l in open(f"{out}/actors-{n}/learner/metrics.jsonl")]
    upd = [r for r in rows if "ppo/update_seconds" in r][1:]
    secs = sum(r["ppo/update_seconds"] for r in upd)
    rps = 64 * len(upd) / secs
    wait = sum(r["ppo/wait_seconds"] for r in upd) / secs
    base = base or rps
    made = 0.0  # what the actors generated per second (the learner drops what is too stale)
    for f in glob.glob(f"{out}/actors-{n}/logs/actor-*.log"):
        m = re.findall(r"(\d+) rollouts, .* of ([0-9.e+-]+) s waiting", open(f).read())
        if m:
            made += int(m[-1][0]) / float(m[-1][1])
    print(f"{n} actor(s): learner trains on {rps:6.1f} rollouts/s ({rps/base:.2f}x of 1 actor), actors generate {made:6.1f}/s, "
          f"learner waits {100*wait:4.1f}% of each update, mean staleness {sum(r['ppo/staleness'] for r in upd)/len(upd):.2f}")
print(f"(runs in {out})")
PY
