#include "learner/algos/masked.h"

#include "core/error.h"

namespace keel {

torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& mask) {
  auto m = mask.to(x.scalar_type());
  return (x * m).sum() / m.sum().clamp_min(1.0);
}

torch::Tensor masked_var(const torch::Tensor& x, const torch::Tensor& mask, bool unbiased) {
  auto m = mask.to(x.scalar_type());
  const double n = m.sum().item<double>();
  KEEL_CHECK(!unbiased || n > 1, "unbiased variance needs at least two valid elements, got " << n);
  auto centered = (x - masked_mean(x, mask)) * m;
  return centered.pow(2).sum() / (unbiased ? n - 1 : n);
}

torch::Tensor masked_whiten(const torch::Tensor& x, const torch::Tensor& mask, bool shift_mean, bool unbiased) {
  auto mean = masked_mean(x, mask);
  auto w = (x - mean) * torch::rsqrt(masked_var(x, mask, unbiased) + 1e-8);
  if (!shift_mean) w = w + mean;
  return w * mask.to(x.scalar_type());
}

}  // namespace keel
