#include "learner/log_rollout_source.h"

#include "core/error.h"

namespace keel {

LogRolloutSource::LogRolloutSource(const std::string& path) : path_(path), rows_(read_rollout_log(path).rows) {
  KEEL_CHECK(!rows_.empty(), "rollout log " << path << " holds no rollouts");
}

std::vector<wire::Rollout> LogRolloutSource::next(size_t n, uint64_t /*version*/) {
  KEEL_CHECK(cursor_ + n <= rows_.size(), "rollout log " << path_ << " holds " << rows_.size() << " rollouts; "
                                                        << cursor_ + n << " are needed (fewer --updates?)");
  std::vector<wire::Rollout> out;
  for (size_t i = cursor_; i < cursor_ + n; ++i) {
    const auto& l = rows_[i];
    wire::Rollout r;
    r.prompt_tokens = l.prompt;
    r.response_tokens = l.response;
    r.logprobs = l.logprobs;
    r.policy_version = l.policy_version;
    r.actor_id = l.actor_id;
    r.score = l.score;
    r.finished = l.finished;
    r.group_id = l.group_id;
    r.uid = l.uid;
    out.push_back(std::move(r));
  }
  cursor_ += n;
  return out;
}

}  // namespace keel
