// PPO for RLHF as an update builder of the actor-learner runtime (rlhf-math.md §1). One update
// takes `rollouts_per_update` rollouts, computes reference log-probs (frozen reference model),
// values (the policy's value head or a separate critic), per-token rewards -beta*KL_t plus the
// score at the last valid token, advantages (GAE, or critic-free GRPO / RLOO, by config), then runs
// `epochs` passes of `minibatches` optimizer steps over them. The ratio is taken against the
// behaviour log-probs that came with each rollout, at the sampling temperature.
// Training-loop steps = updates * epochs * minibatches.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "core/phase_times.h"
#include "learner/algos/kl.h"
#include "learner/algos/off_policy.h"
#include "learner/update_builder.h"

namespace keel {

// kDrGrpo: GRPO without the division by the group's standard deviation (Liu et al. 2025, "Dr.
// GRPO"); the loss is already a token-level mean over the batch, with no per-response length
// normalisation.
// kVtrace: V-trace targets and advantages (IMPALA; rlhf-math.md §6) from the value model, with
// importance ratios pi_prox / mu: GAE's off-policy counterpart for stale rollouts.
enum class AdvantageEstimator { kGae, kVtrace, kGrpo, kDrGrpo, kRloo };
AdvantageEstimator parse_advantage_estimator(const std::string& s);  // gae | vtrace | grpo | dr-grpo | rloo
// GAE and V-trace learn a value model; the others take a group baseline.
bool uses_values(AdvantageEstimator e);

// How the update treats the gap between the behaviour policy mu (the actor's recorded log-probs)
// and the learner's policy at the start of the update, pi_prox (recomputed): kNone takes the PPO
// ratio against mu; kDecoupled takes it against pi_prox and weights each token's loss by truncated
// importance weights pi_prox / mu (decoupled PPO with TIS; rlhf-math.md §10).
enum class OffPolicyCorrection { kNone, kDecoupled };
OffPolicyCorrection parse_off_policy_correction(const std::string& s);  // none | decoupled

// Where the KL to the reference acts: as a per-token penalty in the reward (PPO, RLOO: Ziegler et
// al. 2019), or as a loss term beta * KL (GRPO's placement: there it cannot leak into the group
// normalisation, where a KL folded into the reward would be divided by the group's standard
// deviation and beta would cancel).
enum class KlPlacement { kReward, kLoss };
KlPlacement parse_kl_placement(const std::string& s, AdvantageEstimator e);  // reward | loss | auto (loss for GRPO)

// Critic-free sequence advantages [N*G] from scores [N*G] and summed per-sequence KL [N*G]: the KL
// enters the sequence reward as -beta_in_reward * kl (0 when the KL is a loss term), the group of
// G consecutive rows sets the baseline.
torch::Tensor sequence_advantages(const torch::Tensor& score, const torch::Tensor& kl_seq, double beta_in_reward,
                                  AdvantageEstimator e, int64_t group_size);

struct PpoOptions {
  int64_t rollouts_per_update = 64;
  int64_t epochs = 2;
  int64_t minibatches = 2;  // optimizer steps per epoch
  double clip = 0.2;        // ratio kept in [1 - clip, 1 + clip_high]
  double clip_high = 0;     // 0: clip (symmetric); above clip: "clip-higher" (DAPO, Yu et al. 2025)
  double dual_clip = 0;     // > 1: the loss of a negative advantage is bounded by -A * dual_clip (Ye et al. 2020)
  double value_clip = 0.2;
  double vf_coef = 0.1;
  double gamma = 1.0;
  double lambda = 0.95;
  double temperature = 1.0;  // the actors' sampling temperature (log-probs use logits / T)
  KlEstimator kl_estimator = KlEstimator::kK1;
  KlPlacement kl_placement = KlPlacement::kReward;
  AdaptiveKlConfig kl{0.05, 0.0, 10000};  // target 0 = fixed coefficient
  bool whiten_advantages = true;
  OffPolicyCorrection off_policy = OffPolicyCorrection::kNone;
  IsLevel is_level = IsLevel::kToken;  // decoupled: weights per token or per sequence
  double is_cap = 2.0;                 // decoupled: weights truncated at this (C)
  bool is_mask = false;                // decoupled: weights outside [1/C, C] become 0 instead
  AdvantageEstimator estimator = AdvantageEstimator::kGae;
  int64_t group_size = 1;  // responses per prompt (GRPO/RLOO need >= 2)
  void validate() const;
  int64_t steps_per_update() const { return epochs * minibatches; }
};

class PpoUpdateBuilder : public UpdateBuilder {
 public:
  // `policy` must have a value head when estimator is GAE, unless use_critic() gives a critic.
  // `grad_accum`: micro-batches per optimizer step over all data-parallel ranks.
  PpoUpdateBuilder(PpoOptions o, Transformer policy, Transformer reference, int64_t grad_accum, uint64_t seed);
  // GAE with a separate critic (a model with a value head, e.g. initialised from the reward or SFT
  // model) instead of the policy's value head. The training loop trains it as the companion
  // "critic" at lr * lr_scale. Call before the run starts.
  void use_critic(Transformer critic, double lr_scale = 1.0);

  std::string metric_prefix() const override { return "ppo"; }
  int64_t rollouts_wanted() const override;
  void add(std::vector<wire::Rollout> rollouts, uint64_t version) override;
  Scalars prepare(uint64_t version, Transformer& policy) override;
  int64_t steps_per_update() const override { return o_.steps_per_update(); }
  int64_t rollouts_in_update() const override { return o_.rollouts_per_update; }
  std::unique_ptr<MicroBatch> batch(int64_t k, int64_t micro) override;
  LossResult loss(Transformer& model, const MicroBatch& batch) override;
  std::vector<Companion> companions() const override;
  Scalars finish_update() override;
  std::string save_state() const override;
  void load_state(const std::string& json) override;

  double kl_coef() const { return kl_.value(); }

 private:
  void fill_batch_tensors(const std::vector<wire::Rollout>& rollouts, torch::Tensor& score, Scalars& m);
  void reference_and_values(torch::Tensor& ref_logp, torch::Tensor& values, PhaseTimes& times);
  void off_policy_statistics(Scalars& m);
  void advantages(const torch::Tensor& ref_logp, const torch::Tensor& values, const torch::Tensor& score, Scalars& m);

  PpoOptions o_;
  Transformer policy_, reference_;
  Transformer critic_{nullptr};  // null: values from the policy's value head
  double critic_lr_scale_ = 1.0;
  int64_t grad_accum_;
  uint64_t seed_;
  KlController kl_;
  std::vector<wire::Rollout> collected_;  // rollouts of the update being collected

  // The prepared update's rollout batch, as tensors [N, *].
  struct UpdateBatch {
    uint64_t version = 0;
    torch::Tensor tokens, positions, key_mask;                                     // [N, L]
    torch::Tensor response_mask;                                                   // [N, R]
    torch::Tensor old_logp, prox_logp, ref_logp, old_values, advantages, returns;  // [N, R]; old = behaviour
    torch::Tensor is_weights;                                                      // [N, R] decoupled only
    int64_t prompt_len = 0;                                                        // responses start at this column
    std::vector<int64_t> order;                                                    // row permutation of the current epoch...
    int64_t order_epoch = -1;  // ...which is this one (-1: none yet for this update)
  } u_;
  double kl_seq_mean_ = 0;
};

}  // namespace keel
