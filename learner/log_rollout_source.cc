#include "learner/log_rollout_source.h"

#include "core/error.h"

namespace keel {

LogRolloutSource::LogRolloutSource(const std::string& path) : path_(path), rows_(read_rollout_log(path).rows) {
  KEEL_CHECK(!rows_.empty(), "rollout log " << path << " holds no rollouts");
}

std::vector<wire::Rollout> LogRolloutSource::next(size_t n, uint64_t /*version*/) {
  KEEL_CHECK(cursor_ + n <= rows_.size(), "rollout log " << path_ << " holds " << rows_.size() << " rollouts; " << cursor_ + n
                                                         << " are needed (fewer --updates?)");
  std::vector<wire::Rollout> out;
  for (size_t i = cursor_; i < cursor_ + n; ++i) out.push_back(to_wire(rows_[i]));
  cursor_ += n;
  return out;
}

}  // namespace keel
