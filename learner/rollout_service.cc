#include "learner/rollout_service.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/hash.h"
#include "core/safetensors.h"

namespace keel {

uint64_t weights_checksum(const std::string& bytes) { return fnv1a64(bytes); }

namespace {
CreditOptions credit_options(CreditOptions c, double peer_timeout_s) {
  c.silent_after_s = peer_timeout_s;
  return c;
}
}  // namespace

RolloutService::RolloutService(RolloutServiceOptions o, ReplayOptions replay)
    : o_(std::move(o)), queue_(replay), credits_(credit_options(o_.credits, o_.peer_timeout_s), replay.max_staleness) {
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

RolloutService::~RolloutService() { stop(); }

void RolloutService::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

RolloutServiceStats RolloutService::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  RolloutServiceStats s = stats_;
  s.credits = credits_.stats();
  return s;
}

std::vector<wire::Rollout> RolloutService::next(size_t n, uint64_t version) {
  learner_version_.store(version);
  std::vector<wire::Rollout> out;
  auto last_note = std::chrono::steady_clock::now();
  while (out.size() < n) {
    KEEL_CHECK(!stop_.load(), "rollout service stopped while the learner waited for rollouts");
    credits_.set_demand(version, static_cast<int64_t>(n - out.size()), static_cast<int64_t>(n));
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
  // While the learner trains on these, actors may generate for its next update.
  credits_.set_demand(version + 1, static_cast<int64_t>(n), static_cast<int64_t>(n));
  return out;
}

namespace {

// Removes <dir>/keel-<pid>-<n>.weights regions whose learner process is gone (killed learners
// cannot remove their own).
void remove_dead_regions(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    long pid = 0;
    int gen = 0;
    char tail[16] = {0};
    if (std::sscanf(name.c_str(), "keel-%ld-%d.%15s", &pid, &gen, tail) != 3 || std::string(tail) != "weights" || pid <= 0)
      continue;
    if (::kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH) {
      std::filesystem::remove(e.path(), ec);
      if (!ec) std::cerr << "learner: removed " << e.path().string() << ", left by a learner that is gone\n";
    }
  }
}

std::string blob_bytes(const TensorMap& tensors, uint64_t version) {
  return safetensors_bytes(tensors, {{"policy_version", std::to_string(version)}});
}

}  // namespace

void RolloutService::publish(uint64_t version, Transformer& policy) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto tensors = model_tensors(policy);
  std::shared_ptr<SharedWeights> region;
  {
    std::lock_guard<std::mutex> l(mu_);
    region = region_;
  }
  if (!o_.shared_dir.empty() && !region_failed_) {
    try {
      if (!region || !region->matches(tensors)) {
        remove_dead_regions(o_.shared_dir);
        region = SharedWeights::create(
            o_.shared_dir + "/" + o_.run_name + "-" + std::to_string(region_generation_++) + ".weights", tensors);
        std::cerr << "learner: weights for same-host actors in " << region->path() << " (" << region->file_bytes() / (1 << 20)
                  << " MiB)\n";
      }
      region->write(version, tensors);
    } catch (const KeelError& e) {
      // No room in shared memory, or a directory that cannot hold the region: chunks still work.
      // Anything else (tensors that do not fit the region's layout) is a bug and stops the learner.
      if (e.kind() != ErrorKind::kOutOfSpace && e.kind() != ErrorKind::kIo) throw;
      std::cerr << "learner: " << e.what() << "; actors will fetch weights in chunks instead\n";
      region.reset();
      region_failed_ = true;
    }
  }
  wire::WeightAnnounce a;
  a.policy_version = version;
  std::shared_ptr<const Blob> blob;
  if (region) {
    a.shared_path = region->path();
  } else {
    auto b = std::make_shared<Blob>();
    b->bytes = blob_bytes(tensors, version);
    b->checksum = weights_checksum(b->bytes);
    a.total_bytes = b->bytes.size();
    a.chunk_count = static_cast<uint32_t>((b->bytes.size() + o_.chunk_bytes - 1) / o_.chunk_bytes);
    a.checksum = b->checksum;
    blob = b;
  }
  std::lock_guard<std::mutex> l(mu_);
  region_ = region;
  blob_ = blob;
  announce_ = a;
  announce_pending_ = true;
  announced_once_ = true;
  stats_.published_version = version;
  stats_.publish_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::shared_ptr<const RolloutService::Blob> RolloutService::blob_for(uint64_t version) {
  std::shared_ptr<const Blob> blob;
  std::shared_ptr<SharedWeights> region;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!announced_once_ || announce_.policy_version != version) return nullptr;
    blob = blob_;
    region = region_;
  }
  if (blob || !region) return blob;
  auto b = std::make_shared<Blob>();
  if (!region->read(version, [&](const TensorMap& t) { b->bytes = blob_bytes(t, version); }))
    return nullptr;  // rewritten: a newer one is announced
  b->checksum = weights_checksum(b->bytes);
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.blobs_built;
  if (announce_.policy_version == version) blob_ = b;
  return b;
}

void RolloutService::serve_chunk(wire::Channel& router, const std::string& peer, const wire::WeightRequest& q) {
  auto blob = blob_for(q.policy_version);
  if (!blob) return;  // not the announced version: the actor hears the newer announcement and asks again
  const auto count = static_cast<uint32_t>((blob->bytes.size() + o_.chunk_bytes - 1) / o_.chunk_bytes);
  if (q.chunk >= count) return;
  const size_t off = static_cast<size_t>(q.chunk) * o_.chunk_bytes;
  wire::WeightChunk c{q.policy_version,   q.chunk,       count, blob->bytes.substr(off, o_.chunk_bytes),
                      blob->bytes.size(), blob->checksum};
  wire::send_message(router, {"learner", c}, peer);
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.chunks_served;
}

// Weight chunk and credit requests on the ROUTER socket.
void RolloutService::serve_requests(wire::Channel& router, wire::ReceiveStats& rs) {
  std::string peer;
  auto m = wire::receive(router, 0, rs, &peer);
  if (!m) return;
  const auto now = std::chrono::steady_clock::now();
  credits_.heard(m->sender, now);
  if (auto* q = std::get_if<wire::WeightRequest>(&m->body)) serve_chunk(router, peer, *q);
  if (auto* c = std::get_if<wire::CreditRequest>(&m->body)) {
    const auto grant = credits_.request(m->sender, *c, static_cast<int64_t>(queue_.size()), now);
    wire::send_message(router, {"learner", grant}, peer);
  }
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
    // Rollouts and heartbeats.
    // A short wait: a new version is announced from this loop, so its latency is this bound.
    if (auto m = wire::receive(pull, 1, rs)) {
      peers.heard(m->sender);
      credits_.heard(m->sender, std::chrono::steady_clock::now());
      if (auto* b = std::get_if<wire::RolloutBatch>(&m->body)) {
        credits_.delivered(m->sender, b->credit_id, std::chrono::steady_clock::now());
        if (log_) log_->append(b->rollouts, learner_version_.load());
        for (auto& r : b->rollouts) queue_.push(std::move(r));
        std::lock_guard<std::mutex> l(mu_);
        ++stats_.batches;
      }
    }
    serve_requests(router, rs);
    // Announcements: at once when new, then every second.
    bool pending;
    wire::WeightAnnounce a;
    {
      std::lock_guard<std::mutex> l(mu_);
      pending =
          announce_pending_ || (announced_once_ && std::chrono::steady_clock::now() - last_announce > std::chrono::seconds(1));
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
      credits_.expire(last_peer_check);
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.receive = rs;
      stats_.peers_alive = peers.alive();
      stats_.peers_silent = peers.silent();
    }
  }
}

}  // namespace keel
