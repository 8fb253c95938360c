// GRPO group-normalised advantages (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300 §4.1;
// rlhf-math.md §5.1): A_i = (r_i - mean(r)) / (std(r) + eps) within each prompt's group of G
// responses, std Bessel-corrected as TRL and VERL compute it. scale_by_std = false is Dr.GRPO.
#pragma once

#include <torch/torch.h>

namespace keel {

// rewards [N*G] laid out group by group (G consecutive responses per prompt) -> advantages [N*G].
// A group of one response gets advantage 0.
torch::Tensor grpo_advantages(const torch::Tensor& rewards, int64_t group_size, double eps = 1e-4, bool scale_by_std = true);

}  // namespace keel
