// Online (iterative) DPO: the DPO objective as an update builder of the actor-learner runtime
// (learner/actor_learner.h) instead of fed from a file. Actors sample `group_size` >= 2 responses
// per prompt and the reward service scores them; each update is one optimizer step on pairs
// mined best-against-worst per prompt from fresh rollouts (replay/pair_mining.h; ties give none),
// after which the runtime publishes the new weights, the regime the Asynchronous RLHF paper (Noukhovitch et al. 2024)
// found most robust to stale data. Mined pairs can also be appended to a live preference buffer
// for later offline runs. The loss, the reference and the metrics are DpoObjective's.
#pragma once

#include <memory>
#include <optional>

#include "learner/dpo.h"
#include "learner/update_builder.h"
#include "replay/preference_buffer.h"

namespace keel {

struct OnlineDpoOptions {
  int64_t pairs_per_step = 16;           // pairs per optimizer step (over all micro-batches)
  int64_t group_size = 2;                // responses per prompt the actors send
  double margin = 0.0;                   // minimum score gap of a mined pair
  int64_t max_rollouts_per_step = 4096;  // give up waiting for pairs after this many rollouts (all ties)
  std::string buffer;                    // live preference buffer to append mined pairs to ("" = none)
  std::string tokenizer_identity;
};

class OnlineDpoUpdateBuilder : public UpdateBuilder {
 public:
  OnlineDpoUpdateBuilder(OnlineDpoOptions o, DpoOptions dpo, Transformer reference, int64_t pad_id, int64_t vocab,
                         torch::Device device);
  std::string metric_prefix() const override { return "online"; }
  int64_t rollouts_wanted() const override;
  void add(std::vector<wire::Rollout> rollouts, uint64_t version) override;
  Scalars prepare(uint64_t version, Transformer& policy) override;
  int64_t steps_per_update() const override { return 1; }
  int64_t rollouts_in_update() const override { return rollouts_; }
  std::unique_ptr<MicroBatch> batch(int64_t k, int64_t micro) override;
  LossResult loss(Transformer& model, const MicroBatch& batch) override;
  Scalars finish_update() override;
  // Published every step, checkpointed every --checkpoint-every steps: a resume may announce
  // again versions published after the last checkpoint (with the resumed weights).
  bool checkpoint_each_update() const override { return false; }

 private:
  OnlineDpoOptions o_;
  DpoOptions dpo_;
  std::unique_ptr<DpoObjective> inner_;
  std::unique_ptr<PreferenceWriter> buffer_;
  std::vector<PreferencePair> pairs_;  // the update's pairs
  int64_t rollouts_ = 0;               // rollouts collected for the update
  int64_t pairs_total_ = 0;
};

}  // namespace keel
