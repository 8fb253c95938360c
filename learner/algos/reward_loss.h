// Reward-model training (rlhf-math.md §3): the Bradley-Terry loss -log s(r_c - r_r - m) with an
// optional per-pair margin m and TRL's optional centering term coef * mean((r_c + r_r)^2); the
// reward read at the last valid token; OpenAI's normalisation gain/bias to a target mean and std.
#pragma once

#include <torch/torch.h>

namespace keel {

struct BradleyTerryResult {
  torch::Tensor loss;      // scalar
  torch::Tensor accuracy;  // scalar: share of pairs with r_c > r_r (strict)
};

// chosen, rejected [P]; margin [P] or undefined; center_coef >= 0.
BradleyTerryResult bradley_terry_loss(const torch::Tensor& chosen, const torch::Tensor& rejected,
                                      const torch::Tensor& margin = {}, double center_coef = 0.0);

// Values [B] of per-token `scores` [B, T] at each row's last token where mask [B, T] is 1.
torch::Tensor read_last_valid(const torch::Tensor& scores, const torch::Tensor& mask);

struct RewardNorm {
  double gain = 1.0, bias = 0.0;  // normalised reward = gain * raw + bias
};
// Gain and bias that map `raw` samples to mean `target_mean` and population std `target_std`.
RewardNorm fit_reward_norm(const torch::Tensor& raw, double target_mean = 0.0, double target_std = 1.0);

}  // namespace keel
