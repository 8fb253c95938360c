// Rollouts replayed from a rollout log (replay/rollout_log.h) instead of live actors: `keel ppo
// --rollouts-from LOG` retrains from logged data, in the log's order, reproducibly (the same
// update batches every run, whatever the number of data-parallel ranks). The behaviour log-probs
// and scores are the logged ones.
#pragma once

#include <string>
#include <vector>

#include "learner/rollout_source.h"
#include "replay/rollout_log.h"

namespace keel {

class LogRolloutSource : public RolloutSource {
 public:
  explicit LogRolloutSource(const std::string& path);
  // The next `n` logged rollouts, in order; the version is not checked (logged data is off-policy
  // by construction). Throws when the log runs out.
  std::vector<wire::Rollout> next(size_t n, uint64_t version) override;
  size_t size() const { return rows_.size(); }

 private:
  std::string path_;
  std::vector<LoggedRollout> rows_;
  size_t cursor_ = 0;
};

}  // namespace keel
