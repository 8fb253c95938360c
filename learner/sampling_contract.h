// The sampling contract between actors and the learner: a rollout batch is trained on only when
// its log-probs are under the distribution the learner recomputes (softmax(logits / T) over the
// whole vocabulary, at the learner's T), its groups are the learner's group size, and its tokens
// come from the learner's tokenizer. Anything else would skew every ratio and the KL silently,
// so a batch that breaks the contract is refused (counted and logged with both values).
//
// Truncated sampling (top-k, top-p) and greedy decoding (T = 0) are refused for RL rather than
// corrected: the learner's log-probs are under the full softmax, and a truncated distribution's
// renormalised probabilities would need the same truncation inside every training forward.
// Actors refuse those settings at start (actors/actor.h); the learner checks again on arrival.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "wire/messages.h"

namespace keel {

struct SamplingContract {
  double temperature = 1.0;
  uint32_t group_size = 1;  // 0: any (a learner with a value model has no use for groups)
  std::string tokenizer{};  // identity; "" = not checked
};

// Why `b` breaks the contract, naming the batch's value and the learner's ("" when it keeps it).
std::string contract_violation(const wire::RolloutBatch& b, const SamplingContract& c);

// The batch's groups in order: runs of consecutive rollouts that share group_id, each of exactly
// `group_size` rollouts of one policy version. On a malformed batch returns nothing and says why
// in `why` (naming the group).
std::vector<std::vector<wire::Rollout>> split_groups(std::vector<wire::Rollout> rollouts, uint32_t group_size, std::string* why);

// The update's groups, checked: runs of consecutive rollouts sharing group_id (the queue hands out
// whole groups in order), each of exactly `group_size`. Returns the row order (the identity when
// every run is whole). Throws KeelError naming a group whose size is not `group_size`.
std::vector<size_t> group_order(const std::vector<wire::Rollout>& rollouts, int64_t group_size);

}  // namespace keel
