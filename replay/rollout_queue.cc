#include "replay/rollout_queue.h"

#include <chrono>

namespace keel {

void RolloutQueue::push(wire::Rollout r) {
  {
    std::lock_guard<std::mutex> l(mu_);
    q_.push_back(std::move(r));
    ++stats_.received;
    while (q_.size() > o_.capacity) {
      q_.pop_front();
      ++stats_.evicted;
    }
  }
  cv_.notify_all();
}

std::vector<wire::Rollout> RolloutQueue::take(size_t n, uint64_t learner_version, int timeout_ms, const std::atomic<bool>& stop) {
  std::vector<wire::Rollout> out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::unique_lock<std::mutex> l(mu_);
  while (out.size() < n) {
    while (!q_.empty() && out.size() < n) {
      auto r = std::move(q_.front());
      q_.pop_front();
      const int64_t lag = static_cast<int64_t>(learner_version) - static_cast<int64_t>(r.policy_version);
      if (lag > o_.max_staleness) {
        if (o_.drop_stale) {
          ++stats_.dropped_stale;
          continue;
        }
        ++stats_.kept_stale;
      }
      stats_.staleness_sum += static_cast<double>(std::max<int64_t>(0, lag));
      ++stats_.taken;
      out.push_back(std::move(r));
    }
    if (out.size() >= n || stop.load()) break;
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
  return q_.size();
}

}  // namespace keel
