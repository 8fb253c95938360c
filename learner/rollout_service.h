// The learner's network side. A background thread owns three sockets:
//   rollouts  PULL, bound: rollout batches from actors -> validated -> the RolloutQueue
//             (and the HDF5 rollout log when one is given); bad messages are counted and dropped;
//             every message (heartbeats too) marks its sender alive, and an actor silent for
//             peer_timeout_s is logged and counted (and again when it comes back)
//   weights   PUB, bound: WeightAnnounce for the newest version, repeated every second so that
//             actors joining late still hear it
//   chunks    ROUTER, bound: WeightChunk replies to WeightRequest, for actors on other hosts, and
//             CreditGrant replies to CreditRequest: the flow control of learner/rollout_credits.h
// publish() (the main thread, or a background checkpoint's writer: one at a time) hands the
// policy to the WeightSender (wire/weights/sender.h): the
// region same-host actors read, or the blob other hosts fetch in chunks; announcements and chunk
// replies go out from the service thread (the protocol: wire/weights/weights.h).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "learner/rollout_credits.h"
#include "learner/rollout_source.h"
#include "learner/sampling_contract.h"
#include "learner/weight_publisher.h"
#include "replay/rollout_log.h"
#include "replay/rollout_queue.h"
#include "wire/channel.h"
#include "wire/heartbeat.h"
#include "wire/weights/sender.h"

namespace keel {

struct RolloutServiceOptions {
  std::string rollouts_endpoint = "tcp://127.0.0.1:5555";
  std::string weights_endpoint = "tcp://127.0.0.1:5556";
  std::string chunks_endpoint = "tcp://127.0.0.1:5557";
  std::string shared_dir = "/dev/shm";  // "" = no shared region; actors fetch chunks
  std::string run_name = "keel";        // names the shared region: <shared_dir>/<run_name>-<n>.weights
  size_t chunk_bytes = 4u << 20;
  std::string rollout_log;  // HDF5 path; "" = no log
  std::string tokenizer_identity;
  double peer_timeout_s = 10;  // an actor not heard from (rollouts or heartbeats) this long is reported silent
  CreditOptions credits;       // its silent_after_s is peer_timeout_s
  SamplingContract contract;   // what a batch must keep to be trained on (learner/sampling_contract.h)
};

struct RolloutServiceStats {
  wire::ReceiveStats receive;
  int64_t batches = 0;          // accepted
  int64_t refused_batches = 0;  // broke the sampling contract (or were not whole groups)
  WeightSenderStats weights;
  int64_t peers_alive = 0, peers_silent = 0;  // actors heard within / beyond peer_timeout_s
  CreditStats credits;
};

class RolloutService : public RolloutSource, public WeightPublisher {
 public:
  RolloutService(RolloutServiceOptions o, ReplayOptions replay);
  ~RolloutService() override;

  std::vector<wire::Rollout> next(size_t n, uint64_t version) override;
  void abort(const std::string& why) override;
  void publish_tensors(uint64_t version, const TensorMap& policy) override;
  void stop();
  RolloutServiceStats stats() const;
  ReplayStats replay_stats() const { return queue_.stats(); }

 private:
  void loop();
  void serve_requests(wire::Channel& router, wire::ReceiveStats& rs);
  bool serve_request(wire::Channel& router, wire::ReceiveStats& rs);  // false: none was waiting
  void accept(const std::string& sender, wire::RolloutBatch b);
  void fail_if_every_batch_is_refused() const;

  RolloutServiceOptions o_;
  RolloutQueue queue_;
  CreditLedger credits_;
  std::unique_ptr<RolloutLog> log_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> aborted_{false};
  std::string abort_reason_;  // under mu_, set before aborted_
  mutable std::mutex mu_;
  WeightSender weights_;
  RolloutServiceStats stats_;
  std::string last_refusal_;  // sender and reason of the last refused batch
  std::atomic<uint64_t> learner_version_{0};
  std::vector<std::unique_ptr<wire::Channel>> sockets_;  // owned by the thread: pull, pub, router
  std::thread thread_;
};

}  // namespace keel
