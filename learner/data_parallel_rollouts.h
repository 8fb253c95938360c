// Rollouts and weight publication for a data-parallel actor-learner learner (PPO, online DPO).
// Rank 0 alone owns the rollout service (its sockets, queue and log) and publishes weights; each
// update's rollouts are broadcast from rank 0 over c10d, so every rank builds the same update
// (advantages, reference log-probs) and the training loop gives each rank its share of the
// micro-batches. Other ranks wait in the broadcast while rank 0 waits for actors: give
// --collective-timeout more than the longest wait for rollouts.
#pragma once

#include <memory>

#include "learner/data_parallel.h"
#include "learner/rollout_source.h"
#include "learner/weight_publisher.h"

namespace keel {

class BroadcastRolloutSource : public RolloutSource {
 public:
  // `lead`: rank 0's source (the rollout service); null on the other ranks.
  BroadcastRolloutSource(std::shared_ptr<DataParallel> dp, RolloutSource* lead);
  std::vector<wire::Rollout> next(size_t n, uint64_t version) override;
  void abort(const std::string& why) override {
    if (lead_) lead_->abort(why);
  }

 private:
  std::shared_ptr<DataParallel> dp_;
  RolloutSource* lead_;
};

// Publishes through rank 0's publisher; a no-op on the other ranks.
class LeadPublisher : public WeightPublisher {
 public:
  explicit LeadPublisher(WeightPublisher* lead) : lead_(lead) {}
  void publish_tensors(uint64_t version, const TensorMap& policy) override {
    if (lead_) lead_->publish_tensors(version, policy);
  }

 private:
  WeightPublisher* lead_;
};

}  // namespace keel
