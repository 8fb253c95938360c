#include "learner/rollout_service.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/safetensors.h"

namespace keel {

uint64_t weights_checksum(const std::string& bytes) { return fnv1a64(bytes); }

RolloutService::RolloutService(RolloutServiceOptions o, ReplayOptions replay) : o_(std::move(o)), queue_(replay) {
  if (!o_.rollout_log.empty()) log_ = std::make_unique<RolloutLog>(o_.rollout_log, o_.tokenizer_identity);
  // Bind here, in the caller's thread, so that a taken port is an error at start.
  auto pull = wire::zmq_bind(wire::SocketKind::kPull, o_.rollouts_endpoint);
  auto pub = wire::zmq_bind(wire::SocketKind::kPub, o_.weights_endpoint);
  auto router = wire::zmq_bind(wire::SocketKind::kRouter, o_.chunks_endpoint);
  thread_ = std::thread([this, p = pull.release(), b = pub.release(), r = router.release()] {
    sockets_.emplace_back(p);
    sockets_.emplace_back(b);
    sockets_.emplace_back(r);
    loop();
  });
}

RolloutService::~RolloutService() {
  stop();
  for (const auto& f : {last_shared_file_, previous_shared_file_})
    if (!f.empty()) std::filesystem::remove(f);
}

void RolloutService::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

RolloutServiceStats RolloutService::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

std::vector<wire::Rollout> RolloutService::next(size_t n, uint64_t version) {
  learner_version_.store(version);
  std::vector<wire::Rollout> out;
  auto last_note = std::chrono::steady_clock::now();
  while (out.size() < n) {
    KEEL_CHECK(!stop_.load(), "rollout service stopped while the learner waited for rollouts");
    auto got = queue_.take(n - out.size(), version, 500, stop_);
    for (auto& r : got) out.push_back(std::move(r));
    if (log_ && !got.empty()) {
      std::vector<uint64_t> uids;
      for (size_t i = out.size() - got.size(); i < out.size(); ++i) uids.push_back(out[i].uid);
      log_->mark_trained(uids, version + 1);
    }
    if (out.size() < n && std::chrono::steady_clock::now() - last_note > std::chrono::seconds(30)) {
      std::cerr << "learner: waiting for rollouts (" << out.size() << "/" << n << " for version " << version << ")\n";
      last_note = std::chrono::steady_clock::now();
    }
  }
  return out;
}

void RolloutService::publish(uint64_t version, Transformer& policy) {
  const auto t0 = std::chrono::steady_clock::now();
  auto bytes = std::make_shared<const std::string>(safetensors_bytes(model_tensors(policy), {{"policy_version", std::to_string(version)}}));
  wire::WeightAnnounce a;
  a.policy_version = version;
  a.total_bytes = bytes->size();
  a.chunk_count = static_cast<uint32_t>((bytes->size() + o_.chunk_bytes - 1) / o_.chunk_bytes);
  a.checksum = weights_checksum(*bytes);
  std::string old_file;
  if (!o_.shared_dir.empty()) {
    const std::string path = o_.shared_dir + "/" + o_.run_name + "-" + std::to_string(::getpid()) + "-v" + std::to_string(version) + ".safetensors";
    write_file_atomic(path, *bytes);
    a.shared_path = path;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    blob_ = bytes;
    announce_ = a;
    announce_pending_ = true;
    old_file = last_shared_file_;
    last_shared_file_ = a.shared_path;
    stats_.published_version = version;
    stats_.publish_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  // The previous version's file stays until the next publication, so actors reading it finish.
  if (!previous_shared_file_.empty() && previous_shared_file_ != a.shared_path) std::filesystem::remove(previous_shared_file_);
  previous_shared_file_ = old_file;
}

void RolloutService::loop() {
  auto& pull = *sockets_[0];
  auto& pub = *sockets_[1];
  auto& router = *sockets_[2];
  auto last_announce = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  wire::ReceiveStats rs;
  wire::PeerTracker peers(std::chrono::milliseconds(static_cast<int64_t>(o_.peer_timeout_s * 1000)));
  auto last_peer_check = std::chrono::steady_clock::now();
  while (!stop_.load()) {
    bool busy = false;
    // Rollouts and heartbeats.
    if (auto m = wire::receive(pull, 5, rs)) {
      busy = true;
      peers.heard(m->sender);
      if (auto* b = std::get_if<wire::RolloutBatch>(&m->body)) {
        if (log_) log_->append(b->rollouts, learner_version_.load());
        for (auto& r : b->rollouts) queue_.push(std::move(r));
        std::lock_guard<std::mutex> l(mu_);
        ++stats_.batches;
      }
    }
    // Weight chunk requests.
    std::string peer;
    if (auto m = wire::receive(router, 0, rs, &peer)) {
      busy = true;
      if (auto* q = std::get_if<wire::WeightRequest>(&m->body)) {
        std::shared_ptr<const std::string> blob;
        wire::WeightAnnounce a;
        {
          std::lock_guard<std::mutex> l(mu_);
          blob = blob_;
          a = announce_;
        }
        if (blob && q->policy_version == a.policy_version && q->chunk < a.chunk_count) {
          const size_t off = static_cast<size_t>(q->chunk) * o_.chunk_bytes;
          wire::WeightChunk c{a.policy_version, q->chunk, a.chunk_count, blob->substr(off, o_.chunk_bytes)};
          wire::send_message(router, {"learner", c}, peer);
          std::lock_guard<std::mutex> l(mu_);
          ++stats_.chunks_served;
        }
      }
    }
    // Announcements: at once when new, then every second.
    bool pending;
    wire::WeightAnnounce a;
    {
      std::lock_guard<std::mutex> l(mu_);
      pending = announce_pending_ || (blob_ && std::chrono::steady_clock::now() - last_announce > std::chrono::seconds(1));
      a = announce_;
      announce_pending_ = false;
    }
    if (pending) {
      wire::send_message(pub, {"learner", a});
      last_announce = std::chrono::steady_clock::now();
      std::lock_guard<std::mutex> l(mu_);
      ++stats_.announcements;
    }
    if (std::chrono::steady_clock::now() - last_peer_check > std::chrono::milliseconds(200)) {
      last_peer_check = std::chrono::steady_clock::now();
      for (const auto& c : peers.check())
        std::cerr << "learner: " << c.peer << (c.silent ? " silent for " : " is back after ") << c.seconds << " s\n";
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.receive = rs;
      stats_.peers_alive = peers.alive();
      stats_.peers_silent = peers.silent();
    }
    (void)busy;
  }
}

}  // namespace keel
