#include "learner/rollout_service.h"

#include <chrono>
#include <filesystem>
#include <iostream>

#include "core/checkpoint.h"
#include "core/error.h"

namespace keel {

// Actors whose every batch breaks the sampling contract would otherwise leave the learner waiting
// forever: after kRefusedBeforeFailing refusals and no accepted batch, the learner stops with the reason.
void RolloutService::fail_if_every_batch_is_refused() const {
  constexpr int64_t kRefusedBeforeFailing = 8;
  std::lock_guard<std::mutex> l(mu_);
  KEEL_CHECK(stats_.batches > 0 || stats_.refused_batches < kRefusedBeforeFailing,
             "every rollout batch so far (" << stats_.refused_batches
                                            << ") breaks the learner's sampling contract, the last from " << last_refusal_
                                            << " (learner/sampling_contract.h)");
}

namespace {
CreditOptions credit_options(CreditOptions c, double peer_timeout_s) {
  c.silent_after_s = peer_timeout_s;
  return c;
}
}  // namespace

RolloutService::RolloutService(RolloutServiceOptions o, ReplayOptions replay)
    : o_(std::move(o)), queue_(replay), credits_(credit_options(o_.credits, o_.peer_timeout_s), replay.max_staleness),
      weights_({o_.shared_dir, o_.run_name, o_.chunk_bytes}) {
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
  s.weights = weights_.stats();
  return s;
}

std::vector<wire::Rollout> RolloutService::next(size_t n, uint64_t version) {
  learner_version_.store(version);
  std::vector<wire::Rollout> out;
  auto last_note = std::chrono::steady_clock::now();
  while (out.size() < n) {
    KEEL_CHECK(!stop_.load(), "rollout service stopped while the learner waited for rollouts");
    if (aborted_.load()) {
      std::lock_guard<std::mutex> l(mu_);
      KEEL_FAIL(abort_reason_);
    }
    credits_.set_demand(version, static_cast<int64_t>(n - out.size()), static_cast<int64_t>(n));
    auto got = queue_.take(n - out.size(), version, 500, stop_);
    for (auto& r : got) out.push_back(std::move(r));
    if (log_ && !got.empty()) {
      std::vector<uint64_t> uids;
      for (size_t i = out.size() - got.size(); i < out.size(); ++i) uids.push_back(out[i].uid);
      log_->mark_trained(uids, version + 1);
    }
    fail_if_every_batch_is_refused();
    if (out.size() < n && std::chrono::steady_clock::now() - last_note > std::chrono::seconds(30)) {
      std::cerr << "learner: waiting for rollouts (" << out.size() << "/" << n << " for version " << version << ")\n";
      last_note = std::chrono::steady_clock::now();
    }
  }
  // While the learner trains on these, actors may generate for its next update.
  credits_.set_demand(version + 1, static_cast<int64_t>(n), static_cast<int64_t>(n));
  return out;
}

void RolloutService::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> l(mu_);
    abort_reason_ = why;
  }
  aborted_.store(true);
}

void RolloutService::publish_tensors(uint64_t version, const TensorMap& policy) { weights_.publish(version, policy); }

// A batch that keeps the sampling contract goes to the log and, group by group, to the queue; any
// other is refused, counted and logged naming what differs.
void RolloutService::accept(const std::string& sender, wire::RolloutBatch b) {
  std::string why = contract_violation(b, o_.contract);
  std::vector<std::vector<wire::Rollout>> groups;
  if (why.empty() && o_.contract.group_size == 0) {
    // A learner that takes any group size (GAE, V-trace) needs no groups: each rollout is its own,
    // so any update size can be filled.
    for (const auto& r : b.rollouts) groups.push_back({r});
  } else if (why.empty()) {
    groups = split_groups(b.rollouts, b.group_size, &why);
  }
  if (why.empty() && log_) log_->append(b.rollouts, learner_version_.load());
  std::lock_guard<std::mutex> l(mu_);
  if (!why.empty()) {
    ++stats_.refused_batches;
    last_refusal_ = sender + ": " + why;
    if (stats_.refused_batches <= 10 || stats_.refused_batches % 100 == 0)
      std::cerr << "learner: refused a rollout batch from " << sender << " (" << stats_.refused_batches << " so far): " << why
                << "\n";
    return;
  }
  for (auto& g : groups) queue_.push(std::move(g));
  ++stats_.batches;
}

// Weight chunk and credit requests on the ROUTER socket: every one waiting (up to a bound, so
// that rollouts are not starved), since an actor fetching weights keeps several chunks in flight.
void RolloutService::serve_requests(wire::Channel& router, wire::ReceiveStats& rs) {
  for (int i = 0; i < 32; ++i)
    if (!serve_request(router, rs)) return;
}

bool RolloutService::serve_request(wire::Channel& router, wire::ReceiveStats& rs) {
  std::string peer;
  auto m = wire::receive(router, 0, rs, &peer);
  if (!m) return false;
  const auto now = std::chrono::steady_clock::now();
  credits_.heard(m->sender, now);
  if (auto* q = std::get_if<wire::WeightRequest>(&m->body)) weights_.serve(router, peer, *q);
  if (auto* c = std::get_if<wire::CreditRequest>(&m->body)) {
    const auto grant = credits_.request(m->sender, *c, static_cast<int64_t>(queue_.size()), now);
    wire::send_message(router, {"learner", grant}, peer);
  }
  return true;
}

void RolloutService::loop() {
  auto& pull = *sockets_[0];
  auto& pub = *sockets_[1];
  auto& router = *sockets_[2];
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
        accept(m->sender, std::move(*b));
      }
    }
    serve_requests(router, rs);
    weights_.announce_if_due(pub, std::chrono::steady_clock::now());
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
