// RLOO leave-one-out advantages (Ahmadian et al. 2024, arXiv:2402.14740; Kool et al. 2019;
// rlhf-math.md §5.2): A_i = r_i - mean_{j != i} r_j = k / (k - 1) * (r_i - mean(r)).
#pragma once

#include <torch/torch.h>

namespace keel {

// rewards [N*k] laid out group by group -> advantages [N*k]. Needs k >= 2.
torch::Tensor rloo_advantages(const torch::Tensor& rewards, int64_t group_size);
// The leave-one-out baselines themselves [N*k].
torch::Tensor rloo_baselines(const torch::Tensor& rewards, int64_t group_size);

}  // namespace keel
