#!/usr/bin/env bash
# End-to-end PPO throughput, synchronous against asynchronous (issue 3). One actor, the reward
# service and the learner run through `keel launch`, one LibTorch thread each (this machine has 2
# cores). Synchronous: the actor waits for each new version after its batch and the learner
# accepts only rollouts of its own version (--max-staleness 0). Asynchronous: the actor goes on
# generating with the version it has while the learner trains, and the learner accepts rollouts
# at most 1 version old. Each update takes exactly one actor batch, so both see the same data per
# update. Reports, per mode, PPO tokens/s (prompt + response tokens of an update over its wall
# time, updates 2..N), the learner's share of time waiting for rollouts, the actor's share waiting
# for weights, and the held-out reward before and after (the learning outcome per update).
#   bash bench/ppo_sync_async.sh [SFT_MODEL_DIR]    (default runs/default/sft/model, from run_default.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-runs/default/sft/model}
updates=${UPDATES:-16}
PPO_EXTRA=${PPO_EXTRA:---epochs 1 --minibatches 1}
keel=${KEEL:-build/launch/keel}
out=${OUT:-$(mktemp -d /tmp/keel-ppo-sync-async.XXXXXX)}
[ -f "$model/model.safetensors" ] || { echo "no SFT model in $model (run scripts/run_default.sh, or pass one)" >&2; exit 2; }

run() {  # mode, staleness, sync
  local dir=$out/$1
  rm -rf "$dir"
  $keel launch --out "$dir" --init "$model" --actors 1 --threads-per-process 1 --base-port "$4" \
    --ppo-args "--updates $updates --rollouts-per-update 32 --max-staleness $2 --eval-at-start true --eval-every $updates \
      --eval-per-family 100 --eval-samples 2 --eval-families sort --lr 5e-5 --kl-coef 0.02 --checkpoint-every 0 $PPO_EXTRA" \
    --actor-args "--batch-prompts 32 --families sort --sync $3" > "$dir.log" 2>&1
}
run sync 0 true 48100
run async 1 false 48200

/usr/bin/python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
res = {}
for mode in ("sync", "async"):
    rows = [json.loads(l) for l in open(f"{out}/{mode}/learner/metrics.jsonl")]
    upd = [r for r in rows if "ppo/update_seconds" in r][1:]  # update 1 includes start-up
    evals = [r["eval/task_reward"] for r in rows if "eval/task_reward" in r]
    secs = sum(r["ppo/update_seconds"] for r in upd)
    toks = sum(r["ppo/tokens"] for r in upd)
    wait = sum(r["ppo/wait_seconds"] for r in upd)
    stale = sum(r["ppo/staleness"] for r in upd) / len(upd)
    log = open(f"{out}/{mode}/logs/actor-0.log").read()
    m = re.findall(r"([0-9.e+-]+) s of ([0-9.e+-]+) s waiting for weights", log)
    aw = float(m[-1][0]) / float(m[-1][1]) if m else float("nan")
    res[mode] = toks / secs
    print(f"{mode:5s}: {toks/secs:7.0f} tokens/s over {len(upd)} updates ({secs/len(upd):.2f} s each), learner waits "
          f"{100*wait/secs:4.1f}% of it, actor waits for weights {100*aw:4.1f}%, mean staleness {stale:.2f}, "
          f"held-out sort reward {evals[0]:.3f} -> {evals[-1]:.3f}")
print(f"async / sync: {res['async']/res['sync']:.2f}x  (runs in {out})")
PY
