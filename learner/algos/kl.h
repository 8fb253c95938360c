// KL penalty of RLHF-PPO (rlhf-math.md §1.2-1.4).
//  - Estimators of KL[pi || ref] per sampled token from d = logp - ref (Schulman, "Approximating KL
//    Divergence", 2020): k1 = d, k2 = d^2 / 2, k3 = exp(-d) - 1 + d, abs = |d|.
//  - Per-token reward -beta * KL_t with the sequence score added at the last valid token
//    (the canonical placement of TRL 0.11 / OpenRLHF / VERL).
//  - Adaptive coefficient of Ziegler et al. 2019 §2.2 as coded by OpenAI's lm-human-preferences:
//    e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e * n_steps / horizon.
#pragma once

#include <torch/torch.h>

#include <string>

namespace keel {

enum class KlEstimator { kK1, kK2, kK3, kAbs };
KlEstimator parse_kl_estimator(const std::string& s);  // "k1" | "k2" | "k3" | "abs"

// Log-ratios (to the reference, or between policies in the PPO ratio) are clamped to +-this before
// any exp: a token one model finds near-impossible must not make a loss infinite.
constexpr double kMaxLogRatio = 20.0;

// Per-token KL estimate [B, T] from behaviour/policy log-probs and reference log-probs.
torch::Tensor kl_estimate(const torch::Tensor& logp, const torch::Tensor& ref_logp, KlEstimator estimator);

// Per-token rewards [B, T]: -beta * kl on valid tokens, plus score[b] at the last valid token of row b.
// kl, mask [B, T]; score [B]. A row without valid tokens gets no score.
torch::Tensor kl_penalized_rewards(const torch::Tensor& kl, const torch::Tensor& mask, const torch::Tensor& score, double beta);

// KL as a loss term (GRPO's placement, Shao et al. 2024 eq. 3 with k3): the masked mean over valid
// tokens of kl_estimate(logp, ref_logp); differentiable in logp. The caller scales it by beta.
torch::Tensor kl_loss(const torch::Tensor& logp, const torch::Tensor& ref_logp, const torch::Tensor& mask, KlEstimator estimator);

// Index of the last valid token of each row [B] (-1 for an empty row).
torch::Tensor last_valid_index(const torch::Tensor& mask);

struct AdaptiveKlConfig {
  double init = 0.2;       // beta at the start
  double target = 6.0;     // target KL (per sequence, summed k1, as OpenAI/TRL measure it)
  double horizon = 10000;  // episodes
};

// Fixed when target <= 0. State is the coefficient alone (checkpointed by the learner).
class KlController {
 public:
  explicit KlController(AdaptiveKlConfig config, bool adaptive = true);
  double value() const { return value_; }
  void set_value(double v) { value_ = v; }
  // Called once per update, after the PPO epochs, with that update's rollout KL and rollout count.
  void update(double measured_kl, int64_t n_steps);

 private:
  AdaptiveKlConfig config_;
  bool adaptive_;
  double value_;
};

}  // namespace keel
