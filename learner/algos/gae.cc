#include "learner/algos/gae.h"

namespace keel {

Advantages gae(const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask, double gamma,
               double lambda) {
  const int64_t T = rewards.size(1);
  auto m = mask.to(rewards.scalar_type());
  auto next_value = torch::zeros_like(rewards.select(1, 0));
  auto last_gae = torch::zeros_like(next_value);
  std::vector<torch::Tensor> adv(static_cast<size_t>(T));
  for (int64_t t = T - 1; t >= 0; --t) {
    auto mt = m.select(1, t);
    auto delta = rewards.select(1, t) + gamma * next_value - values.select(1, t);
    auto a = delta + gamma * lambda * last_gae;
    // Where the token is masked, carry the running quantities through unchanged.
    last_gae = mt * a + (1 - mt) * last_gae;
    next_value = mt * values.select(1, t) + (1 - mt) * next_value;
    adv[static_cast<size_t>(t)] = a * mt;
  }
  auto advantages = torch::stack(adv, 1);
  return {advantages, (advantages + values) * m};
}

}  // namespace keel
