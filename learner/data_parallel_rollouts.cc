#include "learner/data_parallel_rollouts.h"

#include "core/error.h"
#include "wire/codec.h"

namespace keel {

BroadcastRolloutSource::BroadcastRolloutSource(std::shared_ptr<DataParallel> dp, RolloutSource* lead)
    : dp_(std::move(dp)), lead_(lead) {
  KEEL_CHECK((dp_->rank() == 0) == (lead_ != nullptr), "rank " << dp_->rank() << ": only rank 0 owns the rollout service");
}

std::vector<wire::Rollout> BroadcastRolloutSource::next(size_t n, uint64_t version) {
  std::string bytes;
  if (lead_) {
    // Only the rollouts travel: they kept the sampling contract when rank 0's service accepted them
    // (learner/sampling_contract.h), and every rank trains under the same options.
    wire::RolloutBatch batch;
    batch.rollouts = lead_->next(n, version);
    bytes = wire::encode({"learner", batch});
  }
  bytes = dp_->broadcast_bytes(bytes);
  wire::DecodeLimits limits;
  limits.max_bytes = bytes.size();
  auto d = wire::decode(bytes.data(), bytes.size(), limits);
  KEEL_CHECK(d.message, "rank " << dp_->rank() << ": the broadcast rollouts do not decode: " << d.error);
  auto* batch = std::get_if<wire::RolloutBatch>(&d.message->body);
  KEEL_CHECK(batch && batch->rollouts.size() == n, "rank " << dp_->rank() << ": expected " << n << " broadcast rollouts");
  return std::move(batch->rollouts);
}

}  // namespace keel
