#include "learner/algos/kl.h"

#include "learner/algos/masked.h"

#include <algorithm>

#include "core/error.h"

namespace keel {

KlEstimator parse_kl_estimator(const std::string& s) {
  if (s == "k1") return KlEstimator::kK1;
  if (s == "k2") return KlEstimator::kK2;
  if (s == "k3") return KlEstimator::kK3;
  if (s == "abs") return KlEstimator::kAbs;
  KEEL_FAIL("unknown KL estimator '" << s << "' (k1, k2, k3, abs)");
}

torch::Tensor kl_estimate(const torch::Tensor& logp, const torch::Tensor& ref_logp, KlEstimator estimator) {
  // Bounded so that one token the reference finds near-impossible cannot make k3 (exp) infinite.
  auto d = (logp - ref_logp).clamp(-kMaxLogRatio, kMaxLogRatio);
  switch (estimator) {
    case KlEstimator::kK1:
      return d;
    case KlEstimator::kK2:
      return 0.5 * d.pow(2);
    case KlEstimator::kK3:
      return torch::exp(-d) - 1 + d;
    case KlEstimator::kAbs:
      return d.abs();
  }
  return d;
}

torch::Tensor kl_loss(const torch::Tensor& logp, const torch::Tensor& ref_logp, const torch::Tensor& mask,
                      KlEstimator estimator) {
  return masked_mean(kl_estimate(logp, ref_logp, estimator), mask);
}

torch::Tensor last_valid_index(const torch::Tensor& mask) {
  const int64_t T = mask.size(1);
  auto idx = torch::arange(T, torch::dtype(torch::kLong).device(mask.device())).unsqueeze(0).expand_as(mask);
  auto masked = torch::where(mask.to(torch::kBool), idx, torch::full_like(idx, -1));
  return std::get<0>(masked.max(1));
}

torch::Tensor kl_penalized_rewards(const torch::Tensor& kl, const torch::Tensor& mask, const torch::Tensor& score, double beta) {
  auto m = mask.to(kl.scalar_type());
  auto rewards = -beta * kl * m;
  auto last = last_valid_index(mask);
  auto has = last >= 0;
  auto onehot =
      torch::zeros_like(rewards).scatter_(1, last.clamp_min(0).unsqueeze(1), 1.0) * has.unsqueeze(1).to(kl.scalar_type());
  return rewards + onehot * score.to(kl.scalar_type()).unsqueeze(1);
}

KlController::KlController(AdaptiveKlConfig config, bool adaptive)
    : config_(config), adaptive_(adaptive && config.target > 0), value_(config.init) {
  KEEL_CHECK(config_.horizon > 0, "KL horizon must be positive");
}

void KlController::update(double measured_kl, int64_t n_steps) {
  if (!adaptive_) return;
  const double error = std::clamp(measured_kl / config_.target - 1.0, -0.2, 0.2);
  value_ *= 1.0 + error * static_cast<double>(n_steps) / config_.horizon;
}

}  // namespace keel
