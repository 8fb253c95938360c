#include "learner/algos/ppo_loss.h"

#include "learner/algos/kl.h"
#include "learner/algos/masked.h"

namespace keel {

PolicyLossResult clipped_policy_loss(const torch::Tensor& logp, const torch::Tensor& logp_old, const torch::Tensor& advantages,
                                     const torch::Tensor& mask, double clip_low, double clip_high, double dual_clip,
                                     const torch::Tensor& weights) {
  auto log_ratio = (logp - logp_old).clamp(-kMaxLogRatio, kMaxLogRatio);
  auto ratio = torch::exp(log_ratio);
  auto loss1 = -advantages * ratio;
  auto loss2 = -advantages * torch::clamp(ratio, 1.0 - clip_low, 1.0 + clip_high);
  auto per_token = torch::max(loss1, loss2);
  if (dual_clip > 1.0) {
    auto bounded = torch::min(per_token, -advantages * dual_clip);
    per_token = torch::where(advantages < 0, bounded, per_token);
  }
  if (weights.defined()) per_token = per_token * weights.detach();
  PolicyLossResult r;
  r.loss = masked_mean(per_token, mask);
  r.clipfrac = masked_mean((loss2 > loss1).to(logp.scalar_type()), mask).detach();
  r.approx_kl = (0.5 * masked_mean(log_ratio.pow(2), mask)).detach();
  r.ratio_mean = masked_mean(ratio, mask).detach();
  return r;
}

ValueLossResult clipped_value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                                   const torch::Tensor& mask, double clip) {
  auto clipped = old_values + torch::clamp(values - old_values, -clip, clip);
  auto l1 = (values - returns).pow(2);
  auto l2 = (clipped - returns).pow(2);
  return {0.5 * masked_mean(torch::max(l1, l2), mask), masked_mean((l2 > l1).to(values.scalar_type()), mask).detach()};
}

torch::Tensor entropy_from_logits(const torch::Tensor& logits, double temperature) {
  auto z = logits.to(torch::kFloat32) / temperature;
  return torch::logsumexp(z, -1) - (torch::softmax(z, -1) * z).sum(-1);
}

torch::Tensor explained_variance(const torch::Tensor& values, const torch::Tensor& returns, const torch::Tensor& mask) {
  auto var_r = masked_var(returns, mask, false);
  return 1.0 - masked_var(returns - values, mask, false) / var_r.clamp_min(1e-12);
}

}  // namespace keel
