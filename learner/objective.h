// Objective: what an algorithm brings to the shared training loop: its micro-batches, its loss
// and its evaluation. The loop owns everything else (optimizer, schedule, clipping, accumulation,
// checkpoints, logging). Pretrain, SFT, reward model and DPO are objectives; the actor-learner
// algorithms (PPO, GRPO, RLOO, online DPO) are update builders (learner/update_builder.h) that the
// actor-learner runtime turns into one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "core/transformer.h"

namespace keel {

// A micro-batch. Subclasses add their tensors; the loop only reads the counts.
struct MicroBatch {
  virtual ~MicroBatch() = default;
  int64_t units = 0;   // what the loss is averaged over (e.g. target tokens); summed over the step
  int64_t tokens = 0;  // input tokens processed, for throughput
};

// A model trained beside the policy (PPO's separate critic). The loop gives it its own AdamW
// parameter groups (learning rate = the schedule's times lr_scale), its own gradient clipping,
// data-parallel reduction, and a model directory <name>/ in every checkpoint and in the run's output.
struct Companion {
  std::string name;
  Transformer model;
  double lr_scale = 1.0;
};

struct LossResult {
  torch::Tensor sum;  // scalar: the loss summed over the micro-batch's units
  Scalars metrics;    // extra per-micro-batch sums to report (divided by the step's units)
};

class Objective {
 public:
  virtual ~Objective() = default;
  // Micro-batch `micro` of optimizer step `step`. Must depend only on (seed, step, micro), and on
  // the update the actor-learner runtime prepared before the step, so that a resumed run sees the
  // same data as an uninterrupted one.
  virtual std::unique_ptr<MicroBatch> batch(int64_t step, int64_t micro) = 0;
  virtual LossResult loss(Transformer& model, const MicroBatch& batch) = 0;
  // Models the loss also trains (their gradients come from the same backward pass).
  virtual std::vector<Companion> companions() const { return {}; }
  // Held-out metrics ("eval/loss", ...). Called in eval mode without gradients.
  virtual Scalars evaluate(Transformer& model) = 0;

  // State beyond the model and optimizer that a resume needs (JSON text; "" = none),
  // stored in the checkpoint as objective_state.json.
  virtual std::string save_state() const { return ""; }
  virtual void load_state(const std::string& /*json*/) {}
};

}  // namespace keel
