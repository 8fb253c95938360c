#include "learner/online_dpo.h"

#include "learner/sampling_contract.h"

#include "core/error.h"
#include "replay/pair_mining.h"

namespace keel {

OnlineDpoUpdateBuilder::OnlineDpoUpdateBuilder(OnlineDpoOptions o, DpoOptions dpo, Transformer reference, int64_t pad_id,
                                               int64_t vocab, torch::Device device)
    : o_(std::move(o)), dpo_(dpo) {
  KEEL_CHECK(o_.group_size >= 2, "online DPO needs at least 2 responses per prompt (--group-size)");
  KEEL_CHECK(o_.pairs_per_step >= dpo_.grad_accum, "--pairs-per-step must give every micro-batch a pair");
  // Micro-batch k of the step is the k-th slice of the pairs gathered for it.
  auto slice = [this](int64_t index) {
    const int64_t micro = index % dpo_.grad_accum;
    const auto n = static_cast<int64_t>(pairs_.size());
    const int64_t begin = n * micro / dpo_.grad_accum, end = n * (micro + 1) / dpo_.grad_accum;
    return std::vector<PreferencePair>(pairs_.begin() + begin, pairs_.begin() + end);
  };
  inner_ = std::make_unique<DpoObjective>(dpo_, slice, std::vector<PreferencePair>{}, std::optional<Transformer>(reference),
                                          pad_id, vocab, device);
  if (!o_.buffer.empty())
    buffer_ = std::make_unique<PreferenceWriter>(o_.buffer, o_.tokenizer_identity, PreferenceContents{false, true}, false);
}

int64_t OnlineDpoUpdateBuilder::rollouts_wanted() const {
  const int64_t missing = o_.pairs_per_step - static_cast<int64_t>(pairs_.size());
  if (missing <= 0 || (rollouts_ >= o_.max_rollouts_per_step && !pairs_.empty())) return 0;
  // Whole groups: a group's rollouts arrive together from one actor batch.
  return missing * o_.group_size;
}

void OnlineDpoUpdateBuilder::add(std::vector<wire::Rollout> rollouts, uint64_t /*version*/) {
  group_order(rollouts, o_.group_size);  // whole groups (by group_id) or an error naming the one that is not
  rollouts_ += static_cast<int64_t>(rollouts.size());
  std::vector<LoggedRollout> pending;
  for (auto& r : rollouts) pending.push_back(to_logged(std::move(r)));
  MineOptions mo;
  mo.margin = o_.margin;
  for (auto& p : mine_pairs(pending, mo)) {
    p.source = "online";
    if (static_cast<int64_t>(pairs_.size()) < o_.pairs_per_step) pairs_.push_back(std::move(p));
  }
  if (pairs_.empty() && rollouts_ >= 4 * o_.max_rollouts_per_step)
    KEEL_FAIL("online DPO: " << rollouts_ << " rollouts gave no pair with different scores (all ties?)");
}

Scalars OnlineDpoUpdateBuilder::prepare(uint64_t version, Transformer& /*policy*/) {
  KEEL_CHECK(static_cast<int64_t>(pairs_.size()) >= dpo_.grad_accum, "online DPO: too few pairs for the micro-batches");
  if (buffer_)
    for (const auto& p : pairs_) buffer_->append(p);
  pairs_total_ += static_cast<int64_t>(pairs_.size());
  double staleness = 0;
  for (const auto& p : pairs_) staleness += static_cast<double>(version) - static_cast<double>(p.policy_version);
  return {{"online/pairs", static_cast<double>(pairs_.size())},
          {"online/rollouts", static_cast<double>(rollouts_)},
          {"online/staleness", staleness / static_cast<double>(pairs_.size())}};
}

std::unique_ptr<MicroBatch> OnlineDpoUpdateBuilder::batch(int64_t k, int64_t micro) { return inner_->batch(k, micro); }

LossResult OnlineDpoUpdateBuilder::loss(Transformer& model, const MicroBatch& batch) { return inner_->loss(model, batch); }

Scalars OnlineDpoUpdateBuilder::finish_update() {
  pairs_.clear();
  rollouts_ = 0;
  return {{"online/pairs_total", static_cast<double>(pairs_total_)}};
}

}  // namespace keel
