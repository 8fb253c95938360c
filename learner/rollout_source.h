// RolloutSource: where an actor-learner learner's rollouts come from. The seam between the
// runtime (learner/actor_learner.h) and its implementations: live actors (learner/rollout_service.h),
// rank 0's rollouts broadcast to the other data-parallel ranks (learner/data_parallel_rollouts.h),
// a rollout log replayed in order (learner/log_rollout_source.h), or a generator in tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "wire/messages.h"

namespace keel {

class RolloutSource {
 public:
  virtual ~RolloutSource() = default;
  // `n` rollouts usable by the learner at `version` (within its staleness bound); blocks until
  // they are there. Throws when they can never come (the source stopped or ran out).
  virtual std::vector<wire::Rollout> next(size_t n, uint64_t version) = 0;
  // From another thread: a failure the learner must stop for (a checkpoint written in the
  // background failed, so the version it holds will never be published). A next() waiting now or
  // called later throws with `why`. Sources that never wait on actors may ignore it.
  virtual void abort(const std::string& why) { (void)why; }
};

}  // namespace keel
