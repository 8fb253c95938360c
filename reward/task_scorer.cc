#include "reward/scorer.h"
#include "reward/task_reward.h"

namespace keel {

namespace {
class TaskScorer : public Scorer {
 public:
  std::vector<ScoreResult> score(const std::vector<wire::ScoreItem>& items) override {
    std::vector<ScoreResult> out;
    for (const auto& it : items) {
      const auto r = task_reward(it.prompt, it.response);
      if (r)
        out.push_back({static_cast<float>(*r), {{"task", static_cast<float>(*r)}}});
      else
        out.push_back({0.0f, {{"unknown_task", 1.0f}}});
    }
    return out;
  }
};
}  // namespace

std::unique_ptr<Scorer> make_task_scorer() { return std::make_unique<TaskScorer>(); }

void apply_missing_eos_penalty(const std::vector<wire::ScoreItem>& items, std::vector<ScoreResult>& results, float penalty) {
  if (penalty == 0) return;
  for (size_t i = 0; i < items.size() && i < results.size(); ++i) {
    if (items[i].finished) continue;
    results[i].score -= penalty;
    results[i].parts.emplace_back("missing_eos", -penalty);
  }
}

}  // namespace keel
