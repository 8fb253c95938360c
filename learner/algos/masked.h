// Masked reductions shared by the RL losses. Shapes: x and mask [B, T] (mask 1 = valid token).
#pragma once

#include <torch/torch.h>

namespace keel {

// Mean of x over positions where mask is 1 (a scalar).
torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& mask);

// Variance over masked positions; unbiased (Bessel) as TRL/VERL, or population variance as OpenAI's TF code.
torch::Tensor masked_var(const torch::Tensor& x, const torch::Tensor& mask, bool unbiased = true);

// (x - mean) * rsqrt(var + 1e-8), mean added back when !shift_mean; 0 outside the mask.
// rlhf-math.md §1.6 (TV4): rewards use shift_mean = false, advantages shift_mean = true.
torch::Tensor masked_whiten(const torch::Tensor& x, const torch::Tensor& mask, bool shift_mean = true, bool unbiased = true);

}  // namespace keel
