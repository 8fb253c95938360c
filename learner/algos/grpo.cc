#include "learner/algos/grpo.h"

#include "core/error.h"

namespace keel {

torch::Tensor grpo_advantages(const torch::Tensor& rewards, int64_t group_size, double eps, bool scale_by_std) {
  KEEL_CHECK(group_size > 0 && rewards.numel() % group_size == 0,
             "GRPO: " << rewards.numel() << " rewards do not split into groups of " << group_size);
  auto g = rewards.reshape({-1, group_size});
  auto centered = g - g.mean(1, true);
  if (group_size == 1) return torch::zeros_like(rewards);
  if (scale_by_std) centered = centered / (g.std(1, /*unbiased=*/true, true) + eps);
  return centered.reshape(rewards.sizes());
}

}  // namespace keel
