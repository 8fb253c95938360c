// Liveness on the wire. A HeartbeatSender (in an actor) sends Heartbeat{time, policy version}
// every period from its own thread and socket, so the learner hears from an actor that is busy
// with a long batch. A PeerTracker (in the learner) notes every message by sender and reports the
// peers that went silent for longer than a timeout, and those that came back.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace keel::wire {

class HeartbeatSender {
 public:
  HeartbeatSender(const std::string& endpoint, const std::string& sender, std::chrono::milliseconds period);
  ~HeartbeatSender();
  void set_version(uint64_t v) { version_.store(v); }

 private:
  std::atomic<uint64_t> version_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class PeerTracker {
 public:
  using Clock = std::chrono::steady_clock;
  explicit PeerTracker(std::chrono::milliseconds silent_after) : silent_after_(silent_after) {}
  void heard(const std::string& peer, Clock::time_point now = Clock::now());
  struct Change {
    std::string peer;
    bool silent;     // true: went silent; false: came back
    double seconds;  // since last heard (went silent) or silent for (came back)
  };
  // Peers whose state changed since the last call.
  std::vector<Change> check(Clock::time_point now = Clock::now());
  int64_t alive() const;
  int64_t silent() const;

 private:
  struct Peer {
    Clock::time_point last;
    bool silent = false;
  };
  std::chrono::milliseconds silent_after_;
  std::map<std::string, Peer> peers_;
  std::vector<Change> back_;  // came back since the last check
};

}  // namespace keel::wire
