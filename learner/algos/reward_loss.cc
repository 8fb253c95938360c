#include "learner/algos/reward_loss.h"

#include "core/error.h"
#include "learner/algos/kl.h"

namespace keel {

BradleyTerryResult bradley_terry_loss(const torch::Tensor& chosen, const torch::Tensor& rejected, const torch::Tensor& margin,
                                      double center_coef) {
  auto diff = chosen - rejected;
  if (margin.defined()) diff = diff - margin;
  auto loss = -torch::nn::functional::logsigmoid(diff).mean();
  if (center_coef > 0) loss = loss + center_coef * (chosen + rejected).pow(2).mean();
  return {loss, (chosen > rejected).to(torch::kFloat32).mean().detach()};
}

torch::Tensor read_last_valid(const torch::Tensor& scores, const torch::Tensor& mask) {
  auto last = last_valid_index(mask);
  KEEL_CHECK((last >= 0).all().item<bool>(), "a row has no valid token to read the reward from");
  return scores.gather(1, last.unsqueeze(1)).squeeze(1);
}

RewardNorm fit_reward_norm(const torch::Tensor& raw, double target_mean, double target_std) {
  auto x = raw.to(torch::kFloat64);
  const double mean = x.mean().item<double>();
  const double std = std::sqrt(std::max(0.0, (x * x).mean().item<double>() - mean * mean));
  KEEL_CHECK(std > 0, "reward normalisation needs samples with nonzero spread");
  RewardNorm n;
  n.gain = target_std / std;
  n.bias = target_mean - n.gain * mean;
  return n;
}

}  // namespace keel
