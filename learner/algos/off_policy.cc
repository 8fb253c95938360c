#include "learner/algos/off_policy.h"

#include "core/error.h"
#include "learner/algos/kl.h"
#include "learner/algos/masked.h"

namespace keel {

IsLevel parse_is_level(const std::string& s) {
  if (s == "token") return IsLevel::kToken;
  if (s == "sequence") return IsLevel::kSequence;
  KEEL_FAIL("importance-sampling level must be token or sequence, not '" << s << "'");
}

IsWeights truncated_is_weights(const torch::Tensor& logp_prox, const torch::Tensor& logp_behaviour, const torch::Tensor& mask,
                               double cap, IsLevel level, bool mask_outside) {
  KEEL_CHECK(cap > 1, "the importance-weight cap must be above 1, got " << cap);
  torch::NoGradGuard ng;
  auto log_ratio = (logp_prox - logp_behaviour) * mask;
  torch::Tensor ratio, units;  // per unit: [B, T] tokens or [B, 1] sequences
  if (level == IsLevel::kToken) {
    ratio = torch::exp(log_ratio.clamp(-kMaxLogRatio, kMaxLogRatio));
    units = mask;
  } else {
    ratio = torch::exp(log_ratio.sum(1, true).clamp(-kMaxLogRatio, kMaxLogRatio));
    units = (mask.sum(1, true) > 0).to(mask.scalar_type());
  }
  const auto outside = mask_outside ? (ratio > cap).logical_or(ratio < 1.0 / cap) : ratio > cap;
  auto w = mask_outside ? torch::where(outside, torch::zeros_like(ratio), ratio) : ratio.clamp_max(cap);
  IsWeights r;
  r.weights = w.expand_as(mask) * mask;
  r.truncated_share = masked_mean(outside.to(mask.scalar_type()).expand_as(units), units);
  return r;
}

VtraceResult vtrace_from_discounts(const torch::Tensor& log_rhos, const torch::Tensor& discounts, const torch::Tensor& rewards,
                                   const torch::Tensor& values, const torch::Tensor& bootstrap, double rho_bar, double c_bar,
                                   double rho_pg_bar) {
  KEEL_CHECK(rho_bar >= c_bar, "V-trace needs rho_bar >= c_bar, got " << rho_bar << " < " << c_bar);
  torch::NoGradGuard ng;
  const int64_t T = log_rhos.size(1);
  auto rhos = torch::exp(log_rhos.clamp(-kMaxLogRatio, kMaxLogRatio));
  auto clipped = rhos.clamp_max(rho_bar), cs = rhos.clamp_max(c_bar);
  auto next_values = torch::cat({values.narrow(1, 1, T - 1), bootstrap.unsqueeze(1)}, 1);
  auto deltas = clipped * (rewards + discounts * next_values - values);
  auto acc = torch::zeros_like(bootstrap);
  std::vector<torch::Tensor> vs_minus_v(static_cast<size_t>(T));
  for (int64_t t = T - 1; t >= 0; --t) {
    acc = deltas.select(1, t) + discounts.select(1, t) * cs.select(1, t) * acc;
    vs_minus_v[static_cast<size_t>(t)] = acc;
  }
  auto vs = torch::stack(vs_minus_v, 1) + values;
  auto next_vs = torch::cat({vs.narrow(1, 1, T - 1), bootstrap.unsqueeze(1)}, 1);
  auto pg = rhos.clamp_max(rho_pg_bar) * (rewards + discounts * next_vs - values);
  return {vs, pg};
}

VtraceResult vtrace(const torch::Tensor& log_rhos, const torch::Tensor& rewards, const torch::Tensor& values,
                    const torch::Tensor& mask, double gamma, double rho_bar, double c_bar, double rho_pg_bar) {
  // Within a row the discount is gamma; after the last valid token the episode has ended.
  const int64_t T = mask.size(1);
  auto continues = torch::cat({mask.narrow(1, 1, T - 1), torch::zeros_like(mask.narrow(1, 0, 1))}, 1);
  auto discounts = gamma * continues * mask;
  auto bootstrap = torch::zeros({mask.size(0)}, mask.options());
  auto r =
      vtrace_from_discounts(log_rhos * mask, discounts, rewards * mask, values * mask, bootstrap, rho_bar, c_bar, rho_pg_bar);
  return {r.vs * mask, r.pg_advantages * mask};
}

}  // namespace keel
