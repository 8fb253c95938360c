#include "wire/heartbeat.h"

#include "wire/channel.h"

namespace keel::wire {

HeartbeatSender::HeartbeatSender(const std::string& endpoint, const std::string& sender, std::chrono::milliseconds period) {
  auto channel = zmq_connect(SocketKind::kPush, endpoint);
  thread_ = std::thread([this, sender, period, ch = std::shared_ptr<Channel>(std::move(channel))] {
    auto next = std::chrono::steady_clock::now();
    while (!stop_.load()) {
      if (std::chrono::steady_clock::now() >= next) {
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch());
        send_message(*ch, {sender, Heartbeat{static_cast<uint64_t>(ms.count()), version_.load()}});
        next += period;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

HeartbeatSender::~HeartbeatSender() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void PeerTracker::heard(const std::string& peer, Clock::time_point now) {
  auto& p = peers_[peer];
  if (p.silent) back_.push_back({peer, false, std::chrono::duration<double>(now - p.last).count()});
  p.silent = false;
  p.last = now;
}

std::vector<PeerTracker::Change> PeerTracker::check(Clock::time_point now) {
  std::vector<Change> out = std::move(back_);
  back_.clear();
  for (auto& [name, p] : peers_)
    if (!p.silent && now - p.last > silent_after_) {
      p.silent = true;
      out.push_back({name, true, std::chrono::duration<double>(now - p.last).count()});
    }
  return out;
}

int64_t PeerTracker::alive() const {
  int64_t n = 0;
  for (const auto& [name, p] : peers_) n += p.silent ? 0 : 1;
  return n;
}

int64_t PeerTracker::silent() const { return static_cast<int64_t>(peers_.size()) - alive(); }

}  // namespace keel::wire
