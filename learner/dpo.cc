#include "learner/dpo.h"

#include "core/error.h"

namespace keel {

namespace {
// Pairs whose implicit reward ranks chosen above rejected; a tie (a policy still equal to its
// reference, up to float noise) counts half, so an untrained policy scores 50%, not 0%.
double ranked_above(const torch::Tensor& margins) {
  const auto m = margins.detach().to(torch::kFloat64);
  constexpr double kTie = 1e-6;
  return (m > kTie).sum().item<double>() + 0.5 * (m.abs() <= kTie).sum().item<double>();
}
}  // namespace

DpoObjective::DpoObjective(DpoOptions options, PairSource train, std::vector<PreferencePair> eval,
                           std::optional<Transformer> reference, int64_t pad_id, int64_t vocab, torch::Device device)
    : o_(options), train_(std::move(train)), eval_(std::move(eval)), reference_(std::move(reference)), pad_id_(pad_id),
      vocab_(vocab), device_(device) {
  if (reference_) {
    (*reference_)->eval();
    for (auto& p : (*reference_)->parameters()) p.set_requires_grad(false);
  }
}

std::unique_ptr<MicroBatch> DpoObjective::batch(int64_t step, int64_t micro) {
  auto pairs = train_(step * o_.grad_accum + micro);
  return std::make_unique<PairBatch>(make_pair_batch(pairs, o_.max_len, pad_id_, vocab_, device_));
}

torch::Tensor DpoObjective::reference_logprobs(const PairBatch& b) {
  if (o_.loss.type == DpoLossType::kSimpo) return torch::zeros({2 * b.pairs}, torch::TensorOptions().device(device_));
  if (b.ref.defined()) return b.ref;
  KEEL_CHECK(reference_,
             "preference pairs lack cached reference log-probs and no reference model is loaded "
             "(run keel dpo --precompute-ref, or pass --ref)");
  torch::InferenceMode im;
  return pair_logprobs(*reference_, b).clone();
}

LossResult DpoObjective::loss(Transformer& model, const MicroBatch& mb) {
  const auto& b = static_cast<const PairBatch&>(mb);
  const int64_t P = b.pairs;
  const auto ref = reference_logprobs(b).detach();
  const auto lp = pair_logprobs(model, b);
  PairLogprobs in{lp.narrow(0, 0, P),  lp.narrow(0, P, P),        ref.narrow(0, 0, P),
                  ref.narrow(0, P, P), b.lengths.narrow(0, 0, P), b.lengths.narrow(0, P, P)};
  auto r = dpo_loss(in, o_.loss);
  auto sum = r.losses.sum();
  if (o_.sft_weight > 0) sum = sum + o_.sft_weight * (-in.chosen / in.chosen_len.clamp_min(1)).sum();
  const auto margins = r.chosen_rewards - r.rejected_rewards;
  LossResult out{sum, {}};
  out.metrics["rewards/chosen"] = r.chosen_rewards.sum().item<double>();
  out.metrics["rewards/rejected"] = r.rejected_rewards.sum().item<double>();
  out.metrics["rewards/margins"] = margins.sum().item<double>();
  out.metrics["rewards/accuracies"] = ranked_above(margins);
  out.metrics["logps/chosen"] = in.chosen.detach().sum().item<double>();
  out.metrics["logps/rejected"] = in.rejected.detach().sum().item<double>();
  out.metrics["pairs/truncated"] = static_cast<double>(b.truncated);  // share of pairs, once averaged
  return out;
}

Scalars DpoObjective::evaluate(Transformer& model) {
  if (eval_.empty()) return {};
  double loss = 0, correct = 0, margin = 0;
  for (size_t i = 0; i < eval_.size(); i += static_cast<size_t>(o_.batch_pairs)) {
    std::vector<PreferencePair> part(eval_.begin() + static_cast<long>(i),
                                     eval_.begin() + static_cast<long>(std::min(eval_.size(), i + o_.batch_pairs)));
    auto b = make_pair_batch(part, o_.max_len, pad_id_, vocab_, device_);
    const int64_t P = b.pairs;
    const auto ref = reference_logprobs(b);
    const auto lp = pair_logprobs(model, b);
    PairLogprobs in{lp.narrow(0, 0, P),  lp.narrow(0, P, P),        ref.narrow(0, 0, P),
                    ref.narrow(0, P, P), b.lengths.narrow(0, 0, P), b.lengths.narrow(0, P, P)};
    auto r = dpo_loss(in, o_.loss);
    const auto m = r.chosen_rewards - r.rejected_rewards;
    loss += r.losses.sum().item<double>();
    correct += ranked_above(m);
    margin += m.sum().item<double>();
  }
  const auto n = static_cast<double>(eval_.size());
  return {{"eval/loss", loss / n}, {"eval/accuracy", correct / n}, {"eval/margin", margin / n}};
}

std::pair<std::vector<float>, std::vector<float>> compute_reference_logprobs(Transformer& model,
                                                                             const std::vector<PreferencePair>& pairs,
                                                                             int64_t max_len, int64_t batch_pairs) {
  torch::InferenceMode im;
  model->eval();
  std::vector<float> chosen, rejected;
  for (size_t i = 0; i < pairs.size(); i += static_cast<size_t>(batch_pairs)) {
    std::vector<PreferencePair> part(pairs.begin() + static_cast<long>(i),
                                     pairs.begin() + static_cast<long>(std::min(pairs.size(), i + batch_pairs)));
    auto b = make_pair_batch(part, max_len, model->config().pad_id, model->config().vocab_size, model->device());
    auto lp = pair_logprobs(model, b).to(torch::kCPU);
    const int64_t P = b.pairs;
    for (int64_t k = 0; k < P; ++k) {
      chosen.push_back(lp[k].item<float>());
      rejected.push_back(lp[P + k].item<float>());
    }
  }
  return {chosen, rejected};
}

}  // namespace keel
