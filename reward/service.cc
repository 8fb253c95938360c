#include "reward/service.h"

#include <chrono>
#include <iostream>

#include "core/error.h"

namespace keel {

void RewardServiceOptions::validate() const {
  KEEL_CHECK(max_batch > 0, "reward max-batch must be positive");
  KEEL_CHECK(max_wait_ms >= 0, "reward max-wait-ms must be >= 0");
}

RewardServiceStats serve_rewards(const RewardServiceOptions& o, Scorer& scorer, wire::Channel& channel,
                                 const std::atomic<bool>& stop) {
  o.validate();
  using Clock = std::chrono::steady_clock;
  struct Pending {
    std::string peer;
    wire::ScoreRequest request;
  };
  RewardServiceStats stats;
  std::vector<Pending> pending;
  size_t pending_items = 0;
  Clock::time_point oldest;
  bool shutdown = false;
  while (!stop.load() && !shutdown) {
    int wait = 100;
    if (!pending.empty()) {
      const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - oldest).count();
      wait = static_cast<int>(std::max<int64_t>(0, o.max_wait_ms - waited));
    }
    std::string peer;
    if (auto m = wire::receive(channel, wait, stats.receive, &peer)) {
      if (std::holds_alternative<wire::Shutdown>(m->body)) {
        shutdown = true;
      } else if (auto* q = std::get_if<wire::ScoreRequest>(&m->body)) {
        if (pending.empty()) oldest = Clock::now();
        pending_items += q->items.size();
        pending.push_back({peer, std::move(*q)});
        ++stats.requests;
      }
    }
    const bool due = !pending.empty() &&
                     (pending_items >= static_cast<size_t>(o.max_batch) ||
                      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - oldest).count() >= o.max_wait_ms ||
                      shutdown || stop.load());
    if (!due) continue;
    std::vector<wire::ScoreItem> items;
    for (auto& p : pending)
      for (auto& it : p.request.items) items.push_back(it);
    std::vector<ScoreResult> results;
    std::string error;
    try {
      results = scorer.score(items);
      KEEL_CHECK_KIND(ErrorKind::kInternal, results.size() == items.size(),
                      "scorer returned " << results.size() << " scores for " << items.size() << " items");
      apply_missing_eos_penalty(items, results, o.missing_eos_penalty);
    } catch (const KeelError& e) {
      // A misbehaving reward program or a bad item fails its batch; a bug in keel stops the service.
      if (e.kind() == ErrorKind::kInternal) throw;
      error = e.what();
    } catch (const std::exception& e) {
      error = e.what();  // e.g. the reward model's LibTorch refusing an item
    }
    if (!error.empty()) {
      ++stats.failed;
      std::cerr << "reward: batch of " << items.size() << " failed: " << error << "\n";
    }
    size_t at = 0;
    for (auto& p : pending) {
      wire::ScoreReply reply;
      reply.request_id = p.request.request_id;
      reply.error = error;
      if (error.empty()) {
        for (size_t i = 0; i < p.request.items.size(); ++i, ++at) {
          reply.scores.push_back(results[at].score);
          reply.parts.push_back(results[at].parts);
        }
      }
      if (!wire::send_message(channel, {"reward", reply}, p.peer))
        std::cerr << "reward: a requester went away before its reply\n";
    }
    stats.items += static_cast<int64_t>(items.size());
    ++stats.batches;
    pending.clear();
    pending_items = 0;
  }
  return stats;
}

RewardServiceStats run_reward_service(const RewardServiceOptions& o, const ScorerOptions& so, const std::atomic<bool>& stop) {
  auto scorer = make_scorer(so);
  auto channel = wire::zmq_bind(wire::SocketKind::kRouter, o.endpoint);
  std::cerr << "reward: serving " << so.kind << " rewards on " << o.endpoint << "\n";
  const auto st = serve_rewards(o, *scorer, *channel, stop);
  std::cerr << "reward: " << st.requests << " requests, " << st.items << " items in " << st.batches << " batches, " << st.failed
            << " failed, " << st.receive.rejected << " bad messages\n";
  return st;
}

}  // namespace keel
