#include "learner/rollout_credits.h"

#include <algorithm>

#include "core/error.h"

namespace keel {

namespace {
CreditLedger::Clock::duration seconds(double s) {
  return std::chrono::duration_cast<CreditLedger::Clock::duration>(std::chrono::duration<double>(s));
}
}  // namespace

void CreditOptions::validate() const {
  KEEL_CHECK(ahead_updates >= 0, "credit ahead-updates must be >= 0");
  KEEL_CHECK(ttl_s > 0 && silent_after_s > 0 && supersede_grace_s >= 0, "credit timeouts must be positive");
}

CreditLedger::CreditLedger(CreditOptions o, int64_t max_staleness) : o_(o), max_staleness_(max_staleness) {
  o_.validate();
  KEEL_CHECK(max_staleness_ >= 0, "max-staleness must be >= 0");
  // Rollouts granted further ahead than the staleness bound would be dropped when taken.
  o_.ahead_updates = std::min(o_.ahead_updates, max_staleness_);
}

void CreditLedger::set_demand(uint64_t version, int64_t remaining, int64_t per_update) {
  std::lock_guard<std::mutex> l(mu_);
  have_demand_ = true;
  demand_version_ = version;
  remaining_ = std::max<int64_t>(0, remaining);
  per_update_ = std::max<int64_t>(1, per_update);
}

int64_t CreditLedger::in_flight_locked() const {
  int64_t n = 0;
  for (const auto& [id, g] : grants_) n += g.rollouts;
  return n;
}

wire::CreditGrant CreditLedger::request(const std::string& actor, const wire::CreditRequest& q, int64_t queued,
                                        Clock::time_point now) {
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.requests;
  last_heard_[actor] = now;
  // An actor asks only once its last batch is sent or abandoned (a discarded batch, a restart):
  // its older grants end once a batch still on its way has had time to arrive.
  for (auto& [id, old] : grants_)
    if (old.actor == actor) old.deadline = std::min(old.deadline, now + seconds(o_.supersede_grace_s));
  wire::CreditGrant g;
  g.request_id = q.request_id;
  g.retry_ms = o_.retry_ms;
  if (!have_demand_) {
    ++stats_.refused_full;
    return g;
  }
  const int64_t ahead = std::max<int64_t>(0, queued) + in_flight_locked();
  const int64_t window = remaining_ + o_.ahead_updates * per_update_;
  if (ahead >= window) {
    ++stats_.refused_full;
    return g;
  }
  // The learner version at which this batch's first rollout will be taken.
  const uint64_t taken_at =
      demand_version_ + (ahead < remaining_ ? 0 : 1 + static_cast<uint64_t>((ahead - remaining_) / per_update_));
  const uint64_t least = taken_at > static_cast<uint64_t>(max_staleness_) ? taken_at - static_cast<uint64_t>(max_staleness_) : 0;
  g.min_version = least;
  if (q.policy_version < least) {
    ++stats_.refused_version;
    return g;
  }
  g.granted = true;
  g.credit_id = ++next_id_;
  grants_[g.credit_id] = Grant{actor, static_cast<int64_t>(q.rollouts), now + seconds(o_.ttl_s)};
  ++stats_.granted;
  return g;
}

void CreditLedger::delivered(const std::string& actor, uint64_t credit_id, Clock::time_point now) {
  std::lock_guard<std::mutex> l(mu_);
  last_heard_[actor] = now;
  auto it = grants_.find(credit_id);
  if (credit_id == 0 || it == grants_.end()) {
    ++stats_.ungranted_batches;  // sent without a credit, or after its grant lapsed: still used
    return;
  }
  grants_.erase(it);
  ++stats_.delivered;
}

void CreditLedger::heard(const std::string& actor, Clock::time_point now) {
  std::lock_guard<std::mutex> l(mu_);
  last_heard_[actor] = now;
}

int64_t CreditLedger::expire(Clock::time_point now) {
  std::lock_guard<std::mutex> l(mu_);
  int64_t n = 0;
  for (auto it = grants_.begin(); it != grants_.end();) {
    const auto heard = last_heard_.find(it->second.actor);
    const bool silent = heard == last_heard_.end() || now - heard->second > seconds(o_.silent_after_s);
    if (silent || now >= it->second.deadline) {
      it = grants_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  stats_.lapsed += n;
  return n;
}

CreditStats CreditLedger::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  CreditStats s = stats_;
  s.in_flight_rollouts = in_flight_locked();
  return s;
}

}  // namespace keel
