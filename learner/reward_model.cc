#include "learner/reward_model.h"

#include "core/error.h"
#include "learner/algos/reward_loss.h"

namespace keel {

RewardObjective::RewardObjective(RewardTrainOptions options, PairSource train, std::vector<PreferencePair> eval, int64_t pad_id,
                                 int64_t vocab, torch::Device device)
    : o_(options), train_(std::move(train)), eval_(std::move(eval)), pad_id_(pad_id), vocab_(vocab), device_(device) {}

std::unique_ptr<MicroBatch> RewardObjective::batch(int64_t step, int64_t micro) {
  return std::make_unique<PairBatch>(make_pair_batch(train_(step * o_.grad_accum + micro), o_.max_len, pad_id_, vocab_, device_));
}

LossResult RewardObjective::loss(Transformer& model, const MicroBatch& mb) {
  const auto& b = static_cast<const PairBatch&>(mb);
  const int64_t P = b.pairs;
  KEEL_CHECK(model->config().reward_head, "reward training needs a model with a reward head");
  const auto r = pair_rewards(model, b);
  torch::Tensor margin;
  if (o_.margin_scale != 0.0) {
    margin = (b.rewards.narrow(0, 0, P) - b.rewards.narrow(0, P, P)) * o_.margin_scale;
    KEEL_CHECK(!torch::isnan(margin).any().item<bool>(), "--margin-scale needs chosen/rejected rewards in the buffer's metadata");
  }
  auto bt = bradley_terry_loss(r.narrow(0, 0, P), r.narrow(0, P, P), margin, o_.center_coef);
  LossResult out{bt.loss * static_cast<double>(P), {}};
  out.metrics["accuracy"] = bt.accuracy.item<double>() * static_cast<double>(P);
  out.metrics["pairs/truncated"] = static_cast<double>(b.truncated);  // share of pairs, once averaged
  out.metrics["rewards/chosen"] = r.narrow(0, 0, P).detach().sum().item<double>();
  out.metrics["rewards/rejected"] = r.narrow(0, P, P).detach().sum().item<double>();
  return out;
}

Scalars RewardObjective::evaluate(Transformer& model) {
  if (eval_.empty()) return {};
  double loss = 0, correct = 0;
  for (size_t i = 0; i < eval_.size(); i += static_cast<size_t>(o_.batch_pairs)) {
    std::vector<PreferencePair> part(eval_.begin() + static_cast<long>(i),
                                     eval_.begin() + static_cast<long>(std::min(eval_.size(), i + o_.batch_pairs)));
    auto b = make_pair_batch(part, o_.max_len, pad_id_, vocab_, device_);
    const auto r = pair_rewards(model, b);
    auto bt = bradley_terry_loss(r.narrow(0, 0, b.pairs), r.narrow(0, b.pairs, b.pairs));
    loss += bt.loss.item<double>() * static_cast<double>(b.pairs);
    correct += bt.accuracy.item<double>() * static_cast<double>(b.pairs);
  }
  const auto n = static_cast<double>(eval_.size());
  return {{"eval/loss", loss / n}, {"eval/accuracy", correct / n}};
}

torch::Tensor pair_reward_values(Transformer& model, const std::vector<PreferencePair>& pairs, int64_t max_len,
                                 int64_t batch_pairs) {
  torch::InferenceMode im;
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < pairs.size(); i += static_cast<size_t>(batch_pairs)) {
    std::vector<PreferencePair> part(pairs.begin() + static_cast<long>(i),
                                     pairs.begin() + static_cast<long>(std::min(pairs.size(), i + batch_pairs)));
    auto b = make_pair_batch(part, max_len, model->config().pad_id, model->config().vocab_size, model->device());
    out.push_back(pair_rewards(model, b).to(torch::kCPU));
  }
  return torch::cat(out);
}

}  // namespace keel
