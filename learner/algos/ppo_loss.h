// PPO losses for RLHF (Schulman et al. 2017, arXiv:1707.06347; rlhf-math.md §1.8-1.10).
// The ratio is taken against the behaviour log-probs that came with the rollout (rlhf-math.md §7),
// so staleness shows up in the clip. Aggregation is explicit: a masked mean over all valid tokens.
#pragma once

#include <torch/torch.h>

namespace keel {

struct PolicyLossResult {
  torch::Tensor loss;       // scalar: masked mean of max(-A r, -A clip(r, 1-eps_low, 1+eps_high))
  torch::Tensor clipfrac;   // scalar: share of valid tokens where the clipped term was taken
  torch::Tensor approx_kl;  // scalar: 0.5 * mean((logp - logp_old)^2), logged only
  torch::Tensor ratio_mean;
};

// logp, logp_old, advantages, mask [B, T]. dual_clip > 1 bounds the loss of negative advantages
// by -A * dual_clip (VERL's dual clip); 0 turns it off. `weights` [B, T] (no gradient), when
// given, multiply each token's loss: decoupled PPO's truncated importance weights pi_prox / mu,
// with logp_old then the proximal policy's log-probs (learner/algos/off_policy.h).
PolicyLossResult clipped_policy_loss(const torch::Tensor& logp, const torch::Tensor& logp_old, const torch::Tensor& advantages,
                                     const torch::Tensor& mask, double clip_low, double clip_high, double dual_clip = 0,
                                     const torch::Tensor& weights = {});

struct ValueLossResult {
  torch::Tensor loss;      // scalar: 0.5 * masked mean of max((V - R)^2, (V_clip - R)^2)
  torch::Tensor clipfrac;  // scalar
};

// values, old_values, returns, mask [B, T].
ValueLossResult clipped_value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                                   const torch::Tensor& mask, double clip);

// Entropy [.., T] of softmax(logits / temperature): logsumexp(z) - sum softmax(z) * z.
torch::Tensor entropy_from_logits(const torch::Tensor& logits, double temperature = 1.0);

// Share of the variance of `returns` explained by `values` over valid tokens: 1 - Var(R - V) / Var(R).
torch::Tensor explained_variance(const torch::Tensor& values, const torch::Tensor& returns, const torch::Tensor& mask);

}  // namespace keel
