// The reward service: scores batches from many actors at once. Requests arriving on a ROUTER
// socket are gathered until `max_batch` items are pending or `max_wait_ms` has passed since the
// oldest pending one, scored in one call, and answered to each sender. A request that cannot be
// scored gets a reply with `error` set; a malformed message is counted and dropped. When a batch
// that merged several requests fails, each request is scored on its own (within
// rescore_budget_ms), so one actor's items fail only that actor's request.
#pragma once

#include <atomic>
#include <string>

#include "reward/scorer.h"
#include "wire/channel.h"

namespace keel {

struct RewardServiceOptions {
  std::string endpoint = "tcp://127.0.0.1:5560";  // bind address
  int max_batch = 64;                             // items scored together
  int max_wait_ms = 20;                           // longest wait to fill a batch
  float missing_eos_penalty = 0;                  // subtracted from responses that do not end in EOS
  int rescore_budget_ms = 4000;                   // a failed merged batch is rescored per request within this time
  void validate() const;
};

struct RewardServiceStats {
  int64_t requests = 0, items = 0, batches = 0, failed = 0;
  wire::ReceiveStats receive;
};

// Serves until `stop` becomes true or a Shutdown message arrives.
RewardServiceStats serve_rewards(const RewardServiceOptions& o, Scorer& scorer, wire::Channel& channel,
                                 const std::atomic<bool>& stop);

// The reward service of `keel reward serve`: binds o.endpoint, serves `scorer`'s scores until
// `stop`, and prints its counters.
RewardServiceStats run_reward_service(const RewardServiceOptions& o, const ScorerOptions& scorer, const std::atomic<bool>& stop);

}  // namespace keel
