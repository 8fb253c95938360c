// The DPO family of preference losses (rlhf-math.md §2). With h = (logpi(y_w) - logpi(y_l)) -
// (logref(y_w) - logref(y_l)) from summed response log-probs:
//   sigmoid  -log s(beta h)                              DPO, Rafailov et al. 2023, Eq. 7
//   cdpo     -(1-e) log s(beta h) - e log s(-beta h)     conservative DPO (Mitchell), label smoothing e
//   robust   [-(1-e) log s(beta h) + e log s(-beta h)] / (1 - 2e)   Chowdhury et al. 2024
//   hinge    max(0, 1 - beta h)                          SLiC, Zhao et al. 2023
//   ipo      (h_avg - 1/(2 beta))^2, log-ratios divided by response lengths   Azar et al. 2023
//   simpo    -log s(beta (avg logpi(y_w) - avg logpi(y_l)) - gamma), no reference   Meng et al. 2024
// beta multiplies the reference term too.
#pragma once

#include <torch/torch.h>

#include <string>

namespace keel {

enum class DpoLossType { kSigmoid, kCdpo, kRobust, kHinge, kIpo, kSimpo };
DpoLossType parse_dpo_loss_type(const std::string& s);  // sigmoid | cdpo | robust | hinge | ipo | simpo
const char* dpo_loss_type_name(DpoLossType t);

struct DpoConfig {
  DpoLossType type = DpoLossType::kSigmoid;
  double beta = 0.1;
  double label_smoothing = 0.0;  // e of cdpo / robust
  double simpo_gamma = 0.5;
};

// Inputs [P] per pair: summed policy and reference log-probs of chosen and rejected responses and
// the response lengths (used by ipo and simpo). Reference tensors are ignored by simpo.
struct PairLogprobs {
  torch::Tensor chosen, rejected, ref_chosen, ref_rejected;
  torch::Tensor chosen_len, rejected_len;
};

struct DpoLossResult {
  torch::Tensor losses;            // [P] per pair
  torch::Tensor chosen_rewards;    // [P] beta * (logpi - logref), detached
  torch::Tensor rejected_rewards;  // [P]
};

DpoLossResult dpo_loss(const PairLogprobs& lp, const DpoConfig& config);

// Summed log-probs [B] of the tokens marked by `loss_mask` [B, T], with the shift: logits at
// position t score token t+1 (loss_mask marks the predicted token's position).
torch::Tensor sequence_logprobs(const torch::Tensor& logits, const torch::Tensor& tokens, const torch::Tensor& loss_mask);

}  // namespace keel
