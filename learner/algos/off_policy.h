// Off-policy corrections for asynchronous actors (rlhf-math.md §6, §10). Three policies meet in an
// update: mu, the behaviour policy whose log-probs the actor recorded (an older version, computed by
// the actor's own kernels); pi_prox, the learner's weights at the start of the update, recomputed
// on the same tokens; pi_theta, the policy being optimised.
//  - Truncated importance weights w = min(C, pi_prox / mu) per token, or per sequence from the
//    summed log-ratio (Yao et al. 2025; verl rollout correction); with masking, weights outside
//    [1/C, C] become 0 instead (MIS). Used by decoupled PPO (Hilton et al. 2022): the clipped ratio
//    is taken against pi_prox and each token's loss is multiplied by w.
//  - V-trace targets and policy-gradient advantages (Espeholt et al. 2018, IMPALA §4.1), batch-major.
#pragma once

#include <torch/torch.h>

#include <string>

namespace keel {

enum class IsLevel { kToken, kSequence };
IsLevel parse_is_level(const std::string& s);  // "token" | "sequence"

struct IsWeights {
  torch::Tensor weights;          // [B, T], 0 where mask is 0; no gradient
  torch::Tensor truncated_share;  // scalar: share of weighted units (tokens or sequences) truncated or masked
};

// log-probs and mask [B, T]; cap C > 1.
IsWeights truncated_is_weights(const torch::Tensor& logp_prox, const torch::Tensor& logp_behaviour, const torch::Tensor& mask,
                               double cap, IsLevel level, bool mask_outside);

struct VtraceResult {
  torch::Tensor vs;             // [B, T] value targets, 0 where mask is 0
  torch::Tensor pg_advantages;  // [B, T] rho_pg-weighted advantages, 0 where mask is 0
};

// log_rhos = log pi - log mu, rewards, values [B, T]; mask [B, T] a prefix per row. Discount gamma
// inside a row, 0 after its last valid token (the episode ends there: no bootstrap). rho_bar >= c_bar.
VtraceResult vtrace(const torch::Tensor& log_rhos, const torch::Tensor& rewards, const torch::Tensor& values,
                    const torch::Tensor& mask, double gamma, double rho_bar = 1.0, double c_bar = 1.0, double rho_pg_bar = 1.0);

// The same over explicit per-step discounts and a bootstrap value per row [B] (the general form
// TV12 states); `vtrace` above calls it with discounts gamma * (not last) and bootstrap 0.
VtraceResult vtrace_from_discounts(const torch::Tensor& log_rhos, const torch::Tensor& discounts, const torch::Tensor& rewards,
                                   const torch::Tensor& values, const torch::Tensor& bootstrap, double rho_bar, double c_bar,
                                   double rho_pg_bar);

}  // namespace keel
