// PPO for RLHF as an objective of the shared training loop (rlhf-math.md §1). One update takes
// `rollouts_per_update` rollouts from a RolloutSource, computes reference log-probs (frozen
// reference model), values (the policy's value head), per-token rewards -beta*KL_t plus the score
// at the last valid token, advantages (GAE, or critic-free GRPO / RLOO, by config), then runs
// `epochs` passes of `minibatches` optimizer steps over them. The ratio is taken against the
// behaviour log-probs that came with each rollout, at the sampling temperature. After the last
// step of an update the policy version increases and the WeightPublisher sends the weights.
// Training-loop steps = updates * epochs * minibatches.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "learner/algos/kl.h"
#include "learner/objective.h"
#include "wire/messages.h"

namespace keel {

enum class AdvantageEstimator { kGae, kGrpo, kRloo };
AdvantageEstimator parse_advantage_estimator(const std::string& s);  // gae | grpo | rloo

struct PpoOptions {
  int64_t rollouts_per_update = 64;
  int64_t epochs = 2;
  int64_t minibatches = 2;           // optimizer steps per epoch
  double clip = 0.2;
  double value_clip = 0.2;
  double vf_coef = 0.1;
  double gamma = 1.0;
  double lambda = 0.95;
  double temperature = 1.0;          // the actors' sampling temperature (log-probs use logits / T)
  KlEstimator kl_estimator = KlEstimator::kK1;
  AdaptiveKlConfig kl{0.05, 0.0, 10000};  // target 0 = fixed coefficient
  bool whiten_advantages = true;
  AdvantageEstimator estimator = AdvantageEstimator::kGae;
  int64_t group_size = 1;            // responses per prompt (GRPO/RLOO need >= 2)
  void validate() const;
  int64_t steps_per_update() const { return epochs * minibatches; }
};

// Where rollouts come from: the replay queue in a learner process, a generator in tests.
class RolloutSource {
 public:
  virtual ~RolloutSource() = default;
  // `n` rollouts usable at learner version `version`; blocks until they are there.
  virtual std::vector<wire::Rollout> next(size_t n, uint64_t version) = 0;
};

// Sends a new policy version to the actors.
class WeightPublisher {
 public:
  virtual ~WeightPublisher() = default;
  virtual void publish(uint64_t version, Transformer& policy) = 0;
};

class PpoObjective : public Objective {
 public:
  // `policy` must have a value head when estimator is GAE, unless use_critic() gives a critic. `eval` (optional) scores the policy on
  // held-out prompts (e.g. mean task reward); its scalars are logged at each evaluation.
  PpoObjective(PpoOptions o, Transformer policy, Transformer reference, RolloutSource& source, WeightPublisher& publisher,
               int64_t grad_accum, uint64_t seed, std::function<Scalars(Transformer&)> eval = {});
  // GAE with a separate critic (a model with a value head, e.g. initialised from the reward or SFT
  // model) instead of the policy's value head. The training loop trains it as the companion
  // "critic" at lr * lr_scale. Call before the loop starts.
  void use_critic(Transformer critic, double lr_scale = 1.0);
  std::vector<Companion> companions() const override;
  std::unique_ptr<MicroBatch> batch(int64_t step, int64_t micro) override;
  LossResult loss(Transformer& model, const MicroBatch& batch) override;
  Scalars evaluate(Transformer& model) override;
  Scalars after_step(int64_t step, Transformer& model) override;
  bool checkpoint_due(int64_t step) const override { return step % o_.steps_per_update() == 0; }
  void on_durable(int64_t step, Transformer& model) override;
  std::string save_state() const override;
  void load_state(const std::string& json) override;

  uint64_t version() const { return version_; }
  double kl_coef() const { return kl_.value(); }

 private:
  void prepare_update();

  PpoOptions o_;
  Transformer policy_, reference_;
  Transformer critic_{nullptr};  // null: values from the policy's value head
  double critic_lr_scale_ = 1.0;
  RolloutSource& source_;
  WeightPublisher& publisher_;
  int64_t grad_accum_;
  uint64_t seed_;
  std::function<Scalars(Transformer&)> eval_;
  KlController kl_;
  uint64_t version_ = 0;  // updates completed = the version of the weights actors hold
  bool published_initial_ = false;
  bool publish_pending_ = false;  // an update finished; its weights go out once checkpointed
  int64_t rollouts_trained_ = 0;  // rollouts in completed updates (restored on resume)

  // The current update's rollout batch, as tensors [N, *].
  struct UpdateBatch {
    torch::Tensor tokens, positions, key_mask;  // [N, L]
    torch::Tensor response_mask;                // [N, R]
    torch::Tensor old_logp, old_values, advantages, returns;  // [N, R]
    int64_t prompt_len = 0;                     // responses start at this column
    std::vector<int64_t> order;                 // row permutation of the current epoch...
    int64_t order_epoch = -1;                   // ...which is this one (-1: none yet for this update)
  } u_;
  Scalars update_metrics_;
  double kl_seq_mean_ = 0;
  std::chrono::steady_clock::time_point update_start_;
};

}  // namespace keel
