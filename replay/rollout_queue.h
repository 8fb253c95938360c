// The learner-side queue of rollouts, held as whole groups (the responses to one prompt: GRPO and
// RLOO baselines need every member). Producers (the receive thread) push groups; the learner takes
// whole groups for its current version. A group more than max_staleness versions behind the
// learner is dropped or kept, by config, and counted either way (in rollouts); beyond capacity the
// oldest groups are evicted whole. Thread-safe.
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
  size_t capacity = 8192;     // rollouts held; the oldest groups are evicted (counted) beyond this
};

struct ReplayStats {
  int64_t received = 0, taken = 0, dropped_stale = 0, kept_stale = 0, evicted = 0;
  double staleness_sum = 0;  // over taken rollouts
};

class RolloutQueue {
 public:
  explicit RolloutQueue(ReplayOptions o) : o_(o) {}
  // One group (all of one policy version).
  void push(std::vector<wire::Rollout> group);
  void push(wire::Rollout r) { push(std::vector<wire::Rollout>{std::move(r)}); }
  // Whole groups of at most `n` rollouts in all, usable at `learner_version`, waiting until n are
  // there, `stop` is set or timeout_ms passes (then fewer may be returned). Throws KeelError when
  // the next group cannot fit into n at all (n not a multiple of the group size).
  std::vector<wire::Rollout> take(size_t n, uint64_t learner_version, int timeout_ms, const std::atomic<bool>& stop);
  ReplayStats stats() const;
  size_t size() const;  // rollouts held

 private:
  ReplayOptions o_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<wire::Rollout>> q_;
  size_t held_ = 0;  // rollouts in q_
  ReplayStats stats_;
};

}  // namespace keel
