// Reward-model training on the shared loop: the Bradley-Terry loss of algos/reward_loss.h on the
// reward head read at each response's last token, with an optional margin (margin_scale times the
// pair's metadata reward gap, when the buffer has rewards) and TRL's optional centering term.
// Held-out: eval/accuracy (share of pairs ranked chosen above rejected) and eval/loss.
#pragma once

#include <vector>

#include "learner/pair_batch.h"

namespace keel {

struct RewardTrainOptions {
  int64_t max_len = 256;
  int64_t batch_pairs = 8;    // pairs per held-out evaluation batch
  double margin_scale = 0.0;  // margin = scale * (chosen_reward - rejected_reward); 0 = no margin
  double center_coef = 0.0;
  int64_t grad_accum = 1;
};

class RewardObjective : public Objective {
 public:
  RewardObjective(RewardTrainOptions options, PairSource train, std::vector<PreferencePair> eval, int64_t pad_id, int64_t vocab,
                  torch::Device device);
  std::unique_ptr<MicroBatch> batch(int64_t step, int64_t micro) override;
  LossResult loss(Transformer& model, const MicroBatch& batch) override;
  Scalars evaluate(Transformer& model) override;

 private:
  RewardTrainOptions o_;
  PairSource train_;
  std::vector<PreferencePair> eval_;
  int64_t pad_id_, vocab_;
  torch::Device device_;
};

// Raw rewards (both sides) of `pairs`, for fitting the normalisation.
torch::Tensor pair_reward_values(Transformer& model, const std::vector<PreferencePair>& pairs, int64_t max_len,
                                 int64_t batch_pairs);

}  // namespace keel
