// Flow control between actors and the learner: an actor asks for a credit before it generates a
// batch (wire CreditRequest) and generates only when granted, so that the learner's pace sets the
// actors' instead of the learner discarding what they made too early.
//
// The ledger grants a batch when it will be trained on within the staleness bound:
//  - room: the rollouts already queued or granted ahead of it are fewer than the window the
//    learner will consume soon (the rest of the update it is collecting, plus `ahead_updates`
//    whole updates, so that actors generate while the learner trains);
//  - freshness: the version the learner will be at when it takes this batch is at most
//    max_staleness past the actor's weights. Otherwise the answer names the least version to
//    load first (CreditGrant.min_version).
// A grant lapses when its batch arrives, when its actor is silent for `silent_after_s` (a frozen
// or dead process: what it was granted goes to the others), after `ttl_s`, or `supersede_grace_s`
// after the same actor asks again, granted or not (an actor asks only when its last batch is sent
// or abandoned: a batch discarded mid-generation, a restarted actor's old grant).
// Thread-safe. Time is passed in, so tests drive it with their own clock.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "wire/messages.h"

namespace keel {

struct CreditOptions {
  int64_t ahead_updates = 1;     // updates' worth of rollouts granted beyond the one being collected
  double ttl_s = 300;            // a grant whose batch has not arrived by then lapses
  double silent_after_s = 10;    // an actor not heard from this long loses its grants
  double supersede_grace_s = 5;  // an older grant of an actor that asks again lapses after this
  uint32_t retry_ms = 100;       // refused actors ask again after this long
  void validate() const;
};

struct CreditStats {
  int64_t requests = 0, granted = 0, refused_full = 0, refused_version = 0;
  int64_t delivered = 0, lapsed = 0, ungranted_batches = 0;
  int64_t in_flight_rollouts = 0;  // granted, not yet arrived
};

class CreditLedger {
 public:
  using Clock = std::chrono::steady_clock;
  // `max_staleness`: versions a rollout may lag the learner when it is taken (replay/rollout_queue.h).
  CreditLedger(CreditOptions o, int64_t max_staleness);

  // The learner collects `remaining` more rollouts for its update at `version`; each update takes
  // `per_update`. Until the first call nothing is granted.
  void set_demand(uint64_t version, int64_t remaining, int64_t per_update);
  // Answers `actor`'s request; `queued`: rollouts waiting in the learner's queue.
  wire::CreditGrant request(const std::string& actor, const wire::CreditRequest& q, int64_t queued, Clock::time_point now);
  // A batch arrived from `actor` under `credit_id` (0: none).
  void delivered(const std::string& actor, uint64_t credit_id, Clock::time_point now);
  // Any message from `actor`: it is alive.
  void heard(const std::string& actor, Clock::time_point now);
  // Drops lapsed grants; returns how many lapsed.
  int64_t expire(Clock::time_point now);
  CreditStats stats() const;

 private:
  struct Grant {
    std::string actor;
    int64_t rollouts = 0;
    Clock::time_point deadline;
  };
  int64_t in_flight_locked() const;

  CreditOptions o_;
  int64_t max_staleness_;
  mutable std::mutex mu_;
  bool have_demand_ = false;
  uint64_t demand_version_ = 0;
  int64_t remaining_ = 0, per_update_ = 0;
  uint64_t next_id_ = 0;
  std::map<uint64_t, Grant> grants_;
  std::map<std::string, Clock::time_point> last_heard_;
  CreditStats stats_;
};

}  // namespace keel
