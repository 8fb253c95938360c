// The learner-side queue of rollouts. Producers (the receive thread) push; the learner takes
// batches for its current version. A rollout more than max_staleness versions behind the learner
// is dropped or kept, by config, and counted either way. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "wire/messages.h"

namespace keel {

struct ReplayOptions {
  int64_t max_staleness = 1;  // versions a rollout may lag the learner
  bool drop_stale = true;     // false: keep stale rollouts (counted)
  size_t capacity = 8192;     // oldest rollouts are evicted (counted) beyond this
};

struct ReplayStats {
  int64_t received = 0, taken = 0, dropped_stale = 0, kept_stale = 0, evicted = 0;
  double staleness_sum = 0;  // over taken rollouts
};

class RolloutQueue {
 public:
  explicit RolloutQueue(ReplayOptions o) : o_(o) {}
  void push(wire::Rollout r);
  // Up to `n` rollouts usable at `learner_version`, waiting until n are there, `stop` is set or
  // timeout_ms passes (then fewer may be returned).
  std::vector<wire::Rollout> take(size_t n, uint64_t learner_version, int timeout_ms, const std::atomic<bool>& stop);
  ReplayStats stats() const;
  size_t size() const;

 private:
  ReplayOptions o_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<wire::Rollout> q_;
  ReplayStats stats_;
};

}  // namespace keel
