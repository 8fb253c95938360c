#include "reward/service.h"

#include <chrono>
#include <cmath>
#include <iostream>

#include "core/error.h"

namespace keel {

void RewardServiceOptions::validate() const {
  KEEL_CHECK(max_batch > 0, "reward max-batch must be positive");
  KEEL_CHECK(max_wait_ms >= 0, "reward max-wait-ms must be >= 0");
}

namespace {

using Clock = std::chrono::steady_clock;

struct Pending {
  std::string peer;
  wire::ScoreRequest request;
};

// Scores `items`; "" and the results, or the error that failed them. A bug in keel (kInternal)
// propagates and stops the service; anything the scorer's input or program did fails the batch.
std::string score_items(Scorer& scorer, const std::vector<wire::ScoreItem>& items, float missing_eos_penalty,
                        std::vector<ScoreResult>& results) {
  try {
    results = scorer.score(items);
    KEEL_CHECK_KIND(ErrorKind::kInternal, results.size() == items.size(),
                    "scorer returned " << results.size() << " scores for " << items.size() << " items");
    for (size_t i = 0; i < results.size(); ++i)
      KEEL_CHECK_KIND(ErrorKind::kPeer, std::isfinite(results[i].score),
                      "item " << i << " of the batch scored " << results[i].score << ": not a finite number");
    apply_missing_eos_penalty(items, results, missing_eos_penalty);
    return "";
  } catch (const KeelError& e) {
    if (e.kind() == ErrorKind::kInternal) throw;
    return e.what();
  } catch (const std::exception& e) {
    return e.what();  // e.g. the reward model's LibTorch refusing an item
  }
}

void reply(wire::Channel& channel, const Pending& p, const std::string& error, const ScoreResult* results) {
  wire::ScoreReply r;
  r.request_id = p.request.request_id;
  r.error = error;
  if (error.empty())
    for (size_t i = 0; i < p.request.items.size(); ++i) {
      r.scores.push_back(results[i].score);
      r.parts.push_back(results[i].parts);
    }
  if (!wire::send_message(channel, {"reward", r}, p.peer)) std::cerr << "reward: a requester went away before its reply\n";
}

// One scorer call for all pending requests; when it fails and several actors' requests were
// merged, each request is scored on its own, so one actor's bad items fail only its own request.
void answer(const RewardServiceOptions& o, Scorer& scorer, wire::Channel& channel, const std::vector<Pending>& pending,
            RewardServiceStats& stats) {
  std::vector<wire::ScoreItem> items;
  for (const auto& p : pending)
    for (const auto& it : p.request.items) items.push_back(it);
  std::vector<ScoreResult> results;
  const auto t0 = Clock::now();
  std::string error = score_items(scorer, items, o.missing_eos_penalty, results);
  stats.items += static_cast<int64_t>(items.size());
  ++stats.batches;
  if (error.empty() || pending.size() == 1) {
    if (!error.empty()) {
      ++stats.failed;
      std::cerr << "reward: batch of " << items.size() << " failed: " << error << "\n";
    }
    size_t at = 0;
    for (const auto& p : pending) {
      reply(channel, p, error, error.empty() ? &results[at] : nullptr);
      at += p.request.items.size();
    }
    return;
  }
  std::cerr << "reward: batch of " << items.size() << " from " << pending.size() << " requests failed (" << error
            << "); scoring each request on its own\n";
  for (const auto& p : pending) {
    // A program that hangs would hang once per request: past the budget, the rest share the
    // merged batch's error (their actors ask again) and the service gets back to its socket.
    std::vector<ScoreResult> own;
    const bool in_budget = Clock::now() - t0 < std::chrono::milliseconds(o.rescore_budget_ms);
    const auto own_error = in_budget ? score_items(scorer, p.request.items, o.missing_eos_penalty, own) : error;
    if (!own_error.empty()) {
      ++stats.failed;
      std::cerr << "reward: request " << p.request.request_id << " of " << p.request.items.size()
                << " items failed: " << own_error << "\n";
    }
    reply(channel, p, own_error, own.data());
  }
}

}  // namespace

RewardServiceStats serve_rewards(const RewardServiceOptions& o, Scorer& scorer, wire::Channel& channel,
                                 const std::atomic<bool>& stop) {
  o.validate();
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
    answer(o, scorer, channel, pending, stats);
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
