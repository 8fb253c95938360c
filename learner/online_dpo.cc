#include "learner/online_dpo.h"

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "replay/pair_mining.h"

namespace keel {

OnlineDpoObjective::OnlineDpoObjective(OnlineDpoOptions o, DpoOptions dpo, Transformer policy, Transformer reference,
                                       RolloutSource& source, WeightPublisher& publisher, torch::Device device,
                                       std::function<Scalars(Transformer&)> eval)
    : o_(std::move(o)), dpo_(dpo), policy_(policy), source_(source), publisher_(publisher), eval_(std::move(eval)) {
  const int64_t pad_id = policy->config().pad_id, vocab = policy->config().vocab_size;
  KEEL_CHECK(o_.group_size >= 2, "online DPO needs at least 2 responses per prompt (--group-size)");
  KEEL_CHECK(o_.pairs_per_step >= dpo_.grad_accum, "--pairs-per-step must give every micro-batch a pair");
  // Micro-batch k of step s is the k-th slice of the pairs gathered for step s.
  auto slice = [this](int64_t index) {
    const int64_t micro = index % dpo_.grad_accum;
    const auto n = static_cast<int64_t>(pairs_.size());
    const int64_t begin = n * micro / dpo_.grad_accum, end = n * (micro + 1) / dpo_.grad_accum;
    return std::vector<PreferencePair>(pairs_.begin() + begin, pairs_.begin() + end);
  };
  inner_ = std::make_unique<DpoObjective>(dpo_, slice, std::vector<PreferencePair>{}, std::optional<Transformer>(reference),
                                          pad_id, vocab, device);
  if (!o_.buffer.empty()) buffer_ = std::make_unique<PreferenceWriter>(o_.buffer, o_.tokenizer_identity, PreferenceContents{false, true}, false);
}

void OnlineDpoObjective::gather(int64_t step) {
  if (gathered_step_ == step) return;
  const auto start = std::chrono::steady_clock::now();
  pairs_.clear();
  int64_t rollouts = 0;
  std::vector<LoggedRollout> pending;
  while (static_cast<int64_t>(pairs_.size()) < o_.pairs_per_step) {
    // Ask for whole groups; a group's rollouts arrive together from one actor batch.
    const int64_t need = (o_.pairs_per_step - static_cast<int64_t>(pairs_.size())) * o_.group_size;
    for (auto& r : source_.next(static_cast<size_t>(need), version_)) pending.push_back(to_logged(std::move(r)));
    rollouts += need;
    MineOptions mo;
    mo.margin = o_.margin;
    auto mined = mine_pairs(pending, mo);
    pending.clear();
    for (auto& p : mined) {
      p.source = "online";
      if (static_cast<int64_t>(pairs_.size()) < o_.pairs_per_step) pairs_.push_back(std::move(p));
    }
    if (rollouts >= o_.max_rollouts_per_step && !pairs_.empty()) break;
    if (rollouts >= 4 * o_.max_rollouts_per_step)
      KEEL_FAIL("online DPO: " << rollouts << " rollouts gave no pair with different scores (all ties?)");
  }
  KEEL_CHECK(static_cast<int64_t>(pairs_.size()) >= dpo_.grad_accum, "online DPO: too few pairs for the micro-batches");
  if (buffer_)
    for (const auto& p : pairs_) buffer_->append(p);
  rollouts_total_ += rollouts;
  pairs_total_ += static_cast<int64_t>(pairs_.size());
  double staleness = 0;
  for (const auto& p : pairs_) staleness += static_cast<double>(version_) - static_cast<double>(p.policy_version);
  step_metrics_ = {{"online/pairs", static_cast<double>(pairs_.size())},
                   {"online/rollouts", static_cast<double>(rollouts)},
                   {"online/staleness", staleness / static_cast<double>(pairs_.size())},
                   {"online/wait_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}};
  gathered_step_ = step;
}

std::unique_ptr<MicroBatch> OnlineDpoObjective::batch(int64_t step, int64_t micro) {
  if (!published_initial_) {
    publisher_.publish(version_, policy_);  // actors start from (or, resumed, return to) this version
    published_initial_ = true;
  }
  gather(step);
  return inner_->batch(step, micro);
}

LossResult OnlineDpoObjective::loss(Transformer& model, const MicroBatch& batch) {
  return inner_->loss(model, batch);
}

Scalars OnlineDpoObjective::evaluate(Transformer& model) { return eval_ ? eval_(model) : Scalars{}; }

Scalars OnlineDpoObjective::after_step(int64_t /*step*/, Transformer& /*model*/) {
  ++version_;
  Scalars s = step_metrics_;
  s["online/version"] = static_cast<double>(version_);
  s["online/pairs_total"] = static_cast<double>(pairs_total_);
  return s;
}

// Published every step, checkpointed every --checkpoint-every steps: a resume may announce again
// versions published after the last checkpoint (with the resumed weights).
void OnlineDpoObjective::on_durable(int64_t /*step*/, Transformer& model) { publisher_.publish(version_, model); }

std::string OnlineDpoObjective::save_state() const { return nlohmann::json{{"version", version_}}.dump() + "\n"; }

void OnlineDpoObjective::load_state(const std::string& json) {
  if (json.empty()) return;
  version_ = nlohmann::json::parse(json).at("version").get<uint64_t>();
  published_initial_ = false;
}

}  // namespace keel
