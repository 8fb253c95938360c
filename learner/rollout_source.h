// RolloutSource: where an actor-learner learner's rollouts come from. The seam between the
// runtime (learner/actor_learner.h) and its implementations: live actors (learner/rollout_service.h),
// rank 0's rollouts broadcast to the other data-parallel ranks (learner/data_parallel_rollouts.h),
// a rollout log replayed in order (learner/log_rollout_source.h), or a generator in tests.
#pragma once

#include <cstdint>
#include <vector>

#include "wire/messages.h"

namespace keel {

class RolloutSource {
 public:
  virtual ~RolloutSource() = default;
  // `n` rollouts usable by the learner at `version` (within its staleness bound); blocks until
  // they are there. Throws when they can never come (the source stopped or ran out).
  virtual std::vector<wire::Rollout> next(size_t n, uint64_t version) = 0;
};

}  // namespace keel
