#include "learner/sampling_contract.h"

#include <cmath>
#include <sstream>

#include "core/error.h"

namespace keel {

std::string contract_violation(const wire::RolloutBatch& b, const SamplingContract& c) {
  std::ostringstream why;
  if (b.temperature <= 0)
    why << "greedy samples (temperature 0) have no sampling log-probs: RL actors need --temperature > 0";
  else if (b.top_k != 0 || b.top_p < 1)
    why << "truncated sampling (top-k " << b.top_k << ", top-p " << b.top_p
        << ") is refused for RL: the learner's log-probs are under the full softmax";
  else if (std::abs(b.temperature - c.temperature) > 1e-6 * std::max(1.0, c.temperature))
    why << "sampled at temperature " << b.temperature << ", the learner trains at " << c.temperature
        << ": give actors and learner the same --temperature";
  else if (b.group_size == 0)
    why << "the batch does not state its group size";
  else if (c.group_size != 0 && b.group_size != c.group_size)
    why << "group size " << b.group_size << ", the learner expects " << c.group_size
        << ": give actors and learner the same --group-size";
  else if (!c.tokenizer.empty() && !b.tokenizer.empty() && b.tokenizer != c.tokenizer)
    why << "tokenizer " << b.tokenizer << ", the learner's is " << c.tokenizer;
  return why.str();
}

std::vector<std::vector<wire::Rollout>> split_groups(std::vector<wire::Rollout> rollouts, uint32_t group_size, std::string* why) {
  std::vector<std::vector<wire::Rollout>> groups;
  for (auto& r : rollouts) {
    if (groups.empty() || groups.back().size() == group_size) {
      if (!groups.empty() && groups.back().front().group_id == r.group_id) {
        *why = "group " + std::to_string(r.group_id) + " has more than " + std::to_string(group_size) + " rollouts";
        return {};
      }
      groups.emplace_back();
      groups.back().reserve(group_size);
    }
    auto& g = groups.back();
    if (!g.empty() && (r.group_id != g.front().group_id || r.policy_version != g.front().policy_version)) {
      *why = "group " + std::to_string(g.front().group_id) + " has " + std::to_string(g.size()) +
             " rollouts of one version, not " + std::to_string(group_size);
      return {};
    }
    g.push_back(std::move(r));
  }
  if (!groups.empty() && groups.back().size() != group_size) {
    *why = "the last group has " + std::to_string(groups.back().size()) + " rollouts, not " + std::to_string(group_size);
    return {};
  }
  return groups;
}

std::vector<size_t> group_order(const std::vector<wire::Rollout>& rollouts, int64_t group_size) {
  // Groups arrive whole and in order (the queue hands out whole groups), so a group is a run of
  // consecutive rollouts sharing group_id; the same id later on is another group (a resent batch).
  std::vector<size_t> order;
  for (size_t i = 0; i < rollouts.size();) {
    size_t end = i + 1;
    while (end < rollouts.size() && rollouts[end].group_id == rollouts[i].group_id) ++end;
    KEEL_CHECK(static_cast<int64_t>(end - i) == group_size, "group " << rollouts[i].group_id << " has " << end - i
                                                                     << " rollouts in this update, the group size is "
                                                                     << group_size);
    for (size_t k = i; k < end; ++k) order.push_back(k);
    i = end;
  }
  return order;
}

}  // namespace keel
