// WeightPublisher: sends a policy version to the actors. The runtime (learner/actor_learner.h)
// publishes version 0 (or the resumed version) before it collects, and each later version once
// the update that made it is checkpointed, so that no actor ever holds a version a resume loses.
// Implementations: the rollout service (learner/rollout_service.h), rank 0's publisher on the
// data-parallel ranks (learner/data_parallel_rollouts.h), and NullPublisher for runs without actors.
#pragma once

#include <cstdint>

#include "core/transformer.h"

namespace keel {

class WeightPublisher {
 public:
  virtual ~WeightPublisher() = default;
  // `policy` is read during the call only.
  virtual void publish(uint64_t version, Transformer& policy) = 0;
};

// Publishes nowhere: a learner without actors (replay from a log, tests).
class NullPublisher : public WeightPublisher {
 public:
  void publish(uint64_t, Transformer&) override {}
};

}  // namespace keel
