// The actor-learner runtime: the one loop of every learner that trains on actors' rollouts (PPO,
// GRPO, RLOO, online DPO). Per update:
//   collect   rollouts from the RolloutSource until the UpdateBuilder has what it needs
//   prepare   the builder turns them into the update's tensors (reference log-probs, advantages)
//   train     the update's optimizer steps, through the one TrainLoop (learner/train_loop.h)
//   checkpoint  when the builder asks for one per update (PPO: always; a resume never repeats or
//             skips a version actors have seen)
//   publish   the new policy version through the WeightPublisher; with background checkpoints
//             the checkpoint's writer publishes it once it is on disk, while the next update
//             collects and trains (TrainOptions::background_checkpoints)
//   evaluate  every eval_every steps (held-out evaluation, with the rollout side's counters)
// After every update and evaluation the lead rank rewrites <out_dir>/status.json (learner/run_status.h).
// The policy version is the number of completed updates; it is stored in every checkpoint with
// the builder's state, and a resumed run publishes it again before it collects. A run stopped by
// a signal mid-update resumes with a fresh update for the rest of that update's steps.
// Life of one update, file by file: docs/life_of_an_update.md.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "learner/rollout_source.h"
#include "learner/run_status.h"
#include "learner/train_loop.h"
#include "learner/update_builder.h"
#include "learner/weight_publisher.h"

namespace keel {

class ActorLearner {
 public:
  // `train.steps` must be a whole number of updates (updates * builder.steps_per_update()).
  // `source`, `publisher` and `builder` must outlive run().
  ActorLearner(TrainOptions train, Transformer policy, UpdateBuilder& builder, RolloutSource& source, WeightPublisher& publisher,
               std::string run_config, std::string tokenizer_file);
  ~ActorLearner();
  void set_data_parallel(std::shared_ptr<DataParallel> dp);
  // Held-out evaluation of the policy (logged at each evaluation; lead rank only).
  void set_evaluation(std::function<Scalars(Transformer&)> eval);
  // Counters of the rollout side (queue, wire, actors, credits), logged with every update and evaluation.
  void set_status(std::function<Scalars()> status);
  TrainResult run();
  uint64_t version() const { return version_; }

 private:
  class Steps;  // the Objective the TrainLoop sees: the builder's batches plus the runtime's state
  void collect_and_prepare();
  bool train_update();  // true when a stop was requested
  Scalars finish_update();
  void add_phase_seconds(Scalars& metrics);
  void write_status(const Scalars& update, const Scalars& eval);

  Transformer policy_;
  UpdateBuilder& builder_;
  RolloutSource& source_;
  WeightPublisher& publisher_;
  std::function<Scalars(Transformer&)> eval_;
  std::function<Scalars()> status_;
  std::unique_ptr<Steps> steps_;
  // Written by a background checkpoint's writer thread, which loop_ joins: declared first, so
  // that it outlives loop_.
  std::atomic<double> background_publish_seconds_{0};
  std::unique_ptr<TrainLoop> loop_;
  uint64_t version_ = 0;          // completed updates = the version actors hold
  int64_t rollouts_trained_ = 0;  // rollouts in completed updates
  std::string out_dir_;
  RunStatus status_file_;
  Scalars update_metrics_;
  std::chrono::steady_clock::time_point update_start_;
  std::chrono::steady_clock::time_point cycle_start_ = std::chrono::steady_clock::now();  // the last update's end
  PhaseTimes phases_;  // the runtime's own phases of the update in progress
};

}  // namespace keel
