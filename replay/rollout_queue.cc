#include "replay/rollout_queue.h"

#include <chrono>

#include "core/error.h"

namespace keel {

void RolloutQueue::push(std::vector<wire::Rollout> group) {
  if (group.empty()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    stats_.received += static_cast<int64_t>(group.size());
    held_ += group.size();
    q_.push_back(std::move(group));
    while (held_ > o_.capacity && q_.size() > 1) {
      held_ -= q_.front().size();
      stats_.evicted += static_cast<int64_t>(q_.front().size());
      q_.pop_front();
    }
  }
  cv_.notify_all();
}

std::vector<wire::Rollout> RolloutQueue::take(size_t n, uint64_t learner_version, int timeout_ms, const std::atomic<bool>& stop) {
  std::vector<wire::Rollout> out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::unique_lock<std::mutex> l(mu_);
  while (out.size() < n) {
    while (!q_.empty() && out.size() + q_.front().size() <= n) {
      auto group = std::move(q_.front());
      q_.pop_front();
      held_ -= group.size();
      const auto size = static_cast<int64_t>(group.size());
      const int64_t lag = static_cast<int64_t>(learner_version) - static_cast<int64_t>(group.front().policy_version);
      if (lag > o_.max_staleness) {
        if (o_.drop_stale) {
          stats_.dropped_stale += size;
          continue;
        }
        stats_.kept_stale += size;
      }
      stats_.staleness_sum += static_cast<double>(std::max<int64_t>(0, lag) * size);
      stats_.taken += size;
      for (auto& r : group) out.push_back(std::move(r));
    }
    KEEL_CHECK(q_.empty() || out.size() == n || !out.empty() || q_.front().size() <= n,
               "asked for " << n << " rollouts, which is not whole groups of " << q_.front().size());
    if (out.size() >= n || stop.load()) break;
    if (!q_.empty() && out.size() + q_.front().size() > n) break;  // the rest does not fit: the caller asks again
    if (cv_.wait_until(l, deadline) == std::cv_status::timeout) break;
  }
  return out;
}

ReplayStats RolloutQueue::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

size_t RolloutQueue::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return held_;
}

}  // namespace keel
