// WeightPublisher: sends a policy version to the actors. The runtime (learner/actor_learner.h)
// publishes version 0 (or the resumed version) before it collects, and each later version once
// the update that made it is checkpointed, so that no actor ever holds a version a resume loses.
// Implementations: the rollout service (learner/rollout_service.h), rank 0's publisher on the
// data-parallel ranks (learner/data_parallel_rollouts.h), and NullPublisher for runs without actors.
#pragma once

#include <cstdint>

#include "core/checkpoint.h"
#include "core/transformer.h"

namespace keel {

class WeightPublisher {
 public:
  virtual ~WeightPublisher() = default;
  // `policy` is read during the call only.
  void publish(uint64_t version, Transformer& policy) { publish_tensors(version, model_tensors(policy)); }
  // The policy's tensors under their Hugging Face names (model_tensors), read during the call
  // only: the live ones, or the copy a checkpoint written in the background holds. Called from
  // one thread at a time (a background checkpoint's writer publishes while the runtime does not).
  virtual void publish_tensors(uint64_t version, const TensorMap& policy) = 0;
};

// Publishes nowhere: a learner without actors (replay from a log, tests).
class NullPublisher : public WeightPublisher {
 public:
  void publish_tensors(uint64_t, const TensorMap&) override {}
};

}  // namespace keel
