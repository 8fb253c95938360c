// Generalized Advantage Estimation (Schulman et al. 2015, arXiv:1506.02438; rlhf-math.md §1.7):
//   delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lambda * A_{t+1},  R_t = A_t + V_t
// with V and A zero past the last token. Masked positions (mask 0) carry the next value and
// advantage through unchanged (VERL's form; equal to the plain form when the mask is a prefix).
#pragma once

#include <torch/torch.h>

namespace keel {

struct Advantages {
  torch::Tensor advantages;  // [B, T], un-whitened, 0 where mask is 0
  torch::Tensor returns;     // [B, T] = advantages + values (value-loss targets)
};

// rewards, values, mask [B, T].
Advantages gae(const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask, double gamma, double lambda);

}  // namespace keel
