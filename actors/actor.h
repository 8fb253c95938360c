// An actor process: generates rollouts with the newest policy it holds, has them scored by the
// reward service, and pushes them to the learner.
//  - Prompts: a JSONL file ({prompt} or {messages}) or the built-in tasks' training split; the
//    actor takes every world-th prompt from `rank`, in a seeded order.
//  - Weights: it listens for WeightAnnounce; a newer version is loaded between batches (from the
//    shared file on the same host, else in chunks over the network), so one rollout never mixes
//    two versions. With `sync`, it waits for a new version after each batch.
//  - Flow control: before each batch it asks the learner for a credit (actors/credit_client.h)
//    and generates only when granted, with weights at least as new as the grant names; so a slow
//    learner paces its actors instead of discarding their rollouts as stale.
//  - Faults: an unanswered score request is sent again (with backoff) up to `reward_retries`
//    times; a learner that does not take rollouts is retried the same way. ZeroMQ reconnects by
//    itself when a peer comes back.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "actors/sampler.h"

namespace keel {

struct ActorOptions {
  std::string model_dir;                                   // initial policy (version 0) and tokenizer
  std::string rollouts_endpoint = "tcp://127.0.0.1:5555";  // learner PULL
  std::string weights_endpoint = "tcp://127.0.0.1:5556";   // learner PUB
  std::string chunks_endpoint = "tcp://127.0.0.1:5557";    // learner ROUTER
  std::string reward_endpoint = "tcp://127.0.0.1:5560";
  std::string prompts = "tasks";           // JSONL path, or "tasks" for the built-in suite
  std::vector<std::string> task_families;  // empty = all
  int64_t tasks_per_family = 2000;
  std::string prompt_template = "auto";  // core/chat_template.h: a preset, or auto (the model's own)
  int rank = 0, world = 1;
  // How many times this rank was started before (the launcher counts restarts). Mixed into the
  // sampling seed and the rollout uids, so that a restarted actor never repeats the rollouts of an
  // earlier run of the same rank.
  uint64_t incarnation = 0;
  int64_t batch_prompts = 8;  // prompts per batch
  int64_t group_size = 1;     // responses per prompt
  SamplingConfig sampling;
  bool sync = false;
  bool credits = true;  // ask the learner before each batch
  int reward_timeout_ms = 10000;
  int reward_retries = 30;  // then the actor exits with an error
  int64_t max_batches = 0;  // 0 = until shutdown
  std::string device = "cpu";
  // float32 | bfloat16: the weights decoding reads (bfloat16 copies halve the bytes per step; the
  // learner sees the log-prob gap this causes as ppo/logp_gap_* and corrects it off-policy).
  std::string decode_dtype = "float32";
  void validate() const;
};

struct ActorStats {
  int64_t batches = 0, rollouts = 0, weight_loads = 0, reward_retries = 0, push_retries = 0;
  int64_t discarded_batches = 0;  // generated while the learner rewrote the shared weights in use
  uint64_t version = 0;
  double seconds_waiting_for_weights = 0;
  double seconds_waiting_for_credit = 0;
  int64_t credit_refusals = 0;
  double seconds = 0;  // the whole run
  // Where the run's time went besides waiting (seconds): sampling responses, the reward service's
  // answer, taking new weights into the model, handing rollouts to the learner.
  double seconds_generating = 0, seconds_scoring = 0, seconds_loading_weights = 0, seconds_sending = 0;
};

// One line: what an actor did (printed when it ends).
std::string describe_actor_stats(const ActorStats& s, int rank);

// Runs until `stop` (SIGINT/SIGTERM) or max_batches.
ActorStats run_actor(const ActorOptions& o, const std::atomic<bool>& stop);

}  // namespace keel
