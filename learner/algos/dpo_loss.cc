#include "learner/algos/dpo_loss.h"

#include "core/error.h"

namespace keel {

DpoLossType parse_dpo_loss_type(const std::string& s) {
  if (s == "sigmoid") return DpoLossType::kSigmoid;
  if (s == "cdpo") return DpoLossType::kCdpo;
  if (s == "robust") return DpoLossType::kRobust;
  if (s == "hinge") return DpoLossType::kHinge;
  if (s == "ipo") return DpoLossType::kIpo;
  if (s == "simpo") return DpoLossType::kSimpo;
  KEEL_FAIL("unknown DPO loss type '" << s << "' (sigmoid, cdpo, robust, hinge, ipo, simpo)");
}

const char* dpo_loss_type_name(DpoLossType t) {
  static const char* const kNames[] = {"sigmoid", "cdpo", "robust", "hinge", "ipo", "simpo"};
  return kNames[static_cast<int>(t)];
}

DpoLossResult dpo_loss(const PairLogprobs& lp, const DpoConfig& c) {
  namespace F = torch::nn::functional;
  const double beta = c.beta, e = c.label_smoothing;
  DpoLossResult r;
  if (c.type == DpoLossType::kSimpo) {
    auto margin = lp.chosen / lp.chosen_len - lp.rejected / lp.rejected_len;
    r.losses = -F::logsigmoid(beta * margin - c.simpo_gamma);
    r.chosen_rewards = (beta * lp.chosen / lp.chosen_len).detach();
    r.rejected_rewards = (beta * lp.rejected / lp.rejected_len).detach();
    return r;
  }
  auto chosen_ratio = lp.chosen - lp.ref_chosen, rejected_ratio = lp.rejected - lp.ref_rejected;
  auto h = chosen_ratio - rejected_ratio;
  switch (c.type) {
    case DpoLossType::kSigmoid:
      r.losses = -F::logsigmoid(beta * h);
      break;
    case DpoLossType::kCdpo:
      r.losses = -(1 - e) * F::logsigmoid(beta * h) - e * F::logsigmoid(-beta * h);
      break;
    case DpoLossType::kRobust:
      KEEL_CHECK(e >= 0 && e < 0.5, "robust DPO needs label smoothing in [0, 0.5), got " << e);
      r.losses = (-(1 - e) * F::logsigmoid(beta * h) + e * F::logsigmoid(-beta * h)) / (1 - 2 * e);
      break;
    case DpoLossType::kHinge:
      r.losses = torch::relu(1 - beta * h);
      break;
    case DpoLossType::kIpo: {
      auto h_avg = chosen_ratio / lp.chosen_len - rejected_ratio / lp.rejected_len;
      r.losses = (h_avg - 1 / (2 * beta)).pow(2);
      break;
    }
    case DpoLossType::kSimpo:
      break;
  }
  r.chosen_rewards = (beta * chosen_ratio).detach();
  r.rejected_rewards = (beta * rejected_ratio).detach();
  return r;
}

torch::Tensor sequence_logprobs(const torch::Tensor& logits, const torch::Tensor& tokens, const torch::Tensor& loss_mask) {
  const int64_t T = tokens.size(1);
  auto lp = torch::log_softmax(logits.narrow(1, 0, T - 1).to(torch::kFloat32), -1)
                .gather(-1, tokens.narrow(1, 1, T - 1).unsqueeze(-1))
                .squeeze(-1);
  return (lp * loss_mask.narrow(1, 1, T - 1).to(lp.scalar_type())).sum(1);
}

}  // namespace keel
