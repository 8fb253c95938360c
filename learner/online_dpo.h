// Online (iterative) DPO: the DPO objective fed by the actor-learner loop instead of a file.
// Actors sample `group_size` >= 2 responses per prompt and the reward service scores them; each
// optimizer step the learner takes fresh rollouts from the RolloutSource, mines best-against-worst
// pairs per prompt (replay/pair_mining.h; ties give none), trains on the freshest pairs and
// publishes the new weights, the regime the Asynchronous RLHF paper (Noukhovitch et al. 2024)
// found most robust to stale data. Mined pairs can also be appended to a live preference buffer
// for later offline runs. The loss, the reference and the metrics are DpoObjective's.
#pragma once

#include <functional>
#include <memory>
#include <optional>

#include "learner/dpo.h"
#include "learner/ppo.h"
#include "replay/preference_buffer.h"

namespace keel {

struct OnlineDpoOptions {
  int64_t pairs_per_step = 16;     // pairs per optimizer step (over all micro-batches)
  int64_t group_size = 2;          // responses per prompt the actors send
  double margin = 0.0;             // minimum score gap of a mined pair
  int64_t max_rollouts_per_step = 4096;  // give up waiting for pairs after this many rollouts (all ties)
  std::string buffer;              // live preference buffer to append mined pairs to ("" = none)
  std::string tokenizer_identity;
};

class OnlineDpoObjective : public Objective {
 public:
  OnlineDpoObjective(OnlineDpoOptions o, DpoOptions dpo, Transformer policy, Transformer reference, RolloutSource& source,
                     WeightPublisher& publisher, torch::Device device, std::function<Scalars(Transformer&)> eval = {});
  std::unique_ptr<MicroBatch> batch(int64_t step, int64_t micro) override;
  LossResult loss(Transformer& model, const MicroBatch& batch) override;
  Scalars evaluate(Transformer& model) override;
  Scalars after_step(int64_t step, Transformer& model) override;
  void on_durable(int64_t step, Transformer& model) override;
  std::string save_state() const override;
  void load_state(const std::string& json) override;
  uint64_t version() const { return version_; }

 private:
  void gather(int64_t step);

  OnlineDpoOptions o_;
  DpoOptions dpo_;
  Transformer policy_;
  RolloutSource& source_;
  WeightPublisher& publisher_;
  std::function<Scalars(Transformer&)> eval_;
  std::unique_ptr<DpoObjective> inner_;
  std::unique_ptr<PreferenceWriter> buffer_;
  uint64_t version_ = 0;
  bool published_initial_ = false;
  int64_t gathered_step_ = -1;
  std::vector<PreferencePair> pairs_;  // this step's pairs
  Scalars step_metrics_;
  int64_t pairs_total_ = 0, rollouts_total_ = 0;
};

}  // namespace keel
