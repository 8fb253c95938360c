// UpdateBuilder: what an actor-learner algorithm (PPO, GRPO, RLOO, online DPO) brings to the
// runtime (learner/actor_learner.h): which rollouts an update needs, the update's tensors built
// from them, its micro-batches and its loss. It does no I/O: the runtime collects the rollouts,
// runs the optimizer steps through the one TrainLoop, checkpoints and publishes.
//
// One update: while rollouts_wanted() > 0 the runtime hands over add(rollouts); then prepare();
// then steps_per_update() optimizer steps whose micro-batches come from batch(k, micro), a pure
// function of the prepared update; then finish_update().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "learner/objective.h"
#include "wire/messages.h"

namespace keel {

class UpdateBuilder {
 public:
  virtual ~UpdateBuilder() = default;
  // Metric names of this algorithm start with this ("ppo", "online").
  virtual std::string metric_prefix() const = 0;
  // Rollouts still needed before prepare(); 0 when the update has what it needs.
  virtual int64_t rollouts_wanted() const = 0;
  // Rollouts collected for the update at policy `version`.
  virtual void add(std::vector<wire::Rollout> rollouts, uint64_t version) = 0;
  // Builds the update at `version` from what add() received (reference log-probs, advantages,
  // pairs) and returns its metrics. `policy` is the model being trained, in eval mode meanwhile.
  virtual Scalars prepare(uint64_t version, Transformer& policy) = 0;
  virtual int64_t steps_per_update() const = 0;
  // Rollouts the prepared update trains on (for the trained counter and throughput).
  virtual int64_t rollouts_in_update() const = 0;
  // Micro-batch `micro` (global index over data-parallel ranks) of the update's step k in
  // [0, steps_per_update()). Depends only on the prepared update, k and micro.
  virtual std::unique_ptr<MicroBatch> batch(int64_t k, int64_t micro) = 0;
  virtual LossResult loss(Transformer& model, const MicroBatch& batch) = 0;
  virtual std::vector<Companion> companions() const { return {}; }
  // After the update's last step: metrics, and state that follows the update (a KL controller).
  virtual Scalars finish_update() = 0;
  // True: every update is checkpointed before its weights are published (a resume never repeats
  // or skips a version). False: checkpoints every --checkpoint-every steps only.
  virtual bool checkpoint_each_update() const { return true; }
  // State a resume needs beyond the runtime's (JSON text; "" = none).
  virtual std::string save_state() const { return ""; }
  virtual void load_state(const std::string& /*json*/) {}
};

}  // namespace keel
