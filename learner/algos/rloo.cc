#include "learner/algos/rloo.h"

#include "core/error.h"

namespace keel {

torch::Tensor rloo_baselines(const torch::Tensor& rewards, int64_t group_size) {
  KEEL_CHECK(group_size >= 2 && rewards.numel() % group_size == 0,
             "RLOO needs groups of at least 2 responses; got " << rewards.numel() << " rewards in groups of " << group_size);
  auto g = rewards.reshape({-1, group_size});
  return ((g.sum(1, true) - g) / static_cast<double>(group_size - 1)).reshape(rewards.sizes());
}

torch::Tensor rloo_advantages(const torch::Tensor& rewards, int64_t group_size) {
  return rewards - rloo_baselines(rewards, group_size);
}

}  // namespace keel
