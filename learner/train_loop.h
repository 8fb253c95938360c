// The one training loop every learner uses: AdamW, linear warmup + cosine decay, gradient
// clipping, gradient accumulation (the loss of a step is averaged over all units of its
// micro-batches), periodic evaluation, checkpoints every N steps and on SIGINT/SIGTERM,
// exact resume, a progress bar and metrics (JSONL + TensorBoard) in the run directory.
//
// Checkpoints may be written in the background (TrainOptions::background_checkpoints).
//
// Run directory layout: metrics.jsonl, events.out.tfevents.*, checkpoints/step-NNNNNNNN/
// (model files + optimizer.safetensors + trainer_state.json + run_config.ini + one model directory
// per companion, e.g. critic/), checkpoints/latest, and model/ (the final weights, companions
// beside it) when the run completes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/phase_times.h"
#include "learner/data_parallel.h"
#include "learner/objective.h"
#include "learner/train_state.h"

namespace keel {

struct TrainOptions {
  int64_t steps = 1000;       // optimizer steps in the whole run
  int64_t grad_accum = 1;     // micro-batches per step
  double lr = 3e-4;           // peak learning rate
  double min_lr_ratio = 0.1;  // final lr = lr * min_lr_ratio (cosine decay)
  int64_t warmup_steps = 50;  // linear warmup from lr/warmup to lr
  double weight_decay = 0.1;  // AdamW, on matrices only (not norms, biases, embeddings)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;          // max global gradient norm; 0 = off
  int64_t eval_every = 100;        // steps between evaluations; 0 = only at the end
  bool eval_at_start = false;      // also evaluate before the first step (a "before" figure)
  int64_t checkpoint_every = 100;  // steps between checkpoints; 0 = only at the end and on signals
  int64_t keep_checkpoints = 2;    // newest checkpoints kept
  int64_t log_every = 10;          // steps between metric lines
  std::string out_dir = "runs/run";
  uint64_t seed = 1;
  bool resume = true;                 // continue from out_dir/checkpoints/latest when present
  double collective_timeout_s = 300;  // data-parallel runs: a collective waiting longer fails
  bool overlap_allreduce = true;      // data-parallel runs: all-reduce gradients during the last backward
  // Keep only each block's input during the forward pass and recompute the block in backward
  // (core/activation_checkpoint.h): a smaller peak for one more forward pass of the blocks.
  bool activation_checkpointing = false;
  // Write checkpoints on a thread of their own while training goes on (learner/checkpoint_writer.h):
  // a step waits only for a copy of the weights and optimizer state, held in memory until written.
  bool background_checkpoints = false;
  void validate() const;
};

// Micro-batches of one optimizer step over every data-parallel rank (grad_accum per rank).
int64_t global_micro_batches(const TrainOptions& o, const std::shared_ptr<DataParallel>& dp);

// Learning rate at `step` (0-based) of a run of `total` steps.
double lr_at(const TrainOptions& o, int64_t step);

struct TrainResult {
  int64_t final_step = 0;
  bool interrupted = false;  // stopped by a signal after writing a checkpoint
  Scalars last_eval;
};

class TrainLoop {
 public:
  // `run_config` is the resolved configuration text stored with every checkpoint;
  // `tokenizer_file` is copied into every model directory.
  TrainLoop(TrainOptions options, Transformer model, Objective& objective, std::string run_config, std::string tokenizer_file);
  ~TrainLoop();
  // Runs as one rank of a data-parallel group (see learner/data_parallel.h). Objectives then get
  // global micro-batch indices: rank r's micro m of a step is m * world + r. Call before begin().
  void set_data_parallel(std::shared_ptr<DataParallel> dp) { dp_ = std::move(dp); }

  // The whole run: begin(), then train_step() + checkpoint_if_due() + evaluate_if_due() until
  // done(), then finish(); or interrupted() after a stop request.
  TrainResult run();

  // Stepwise use, for a runtime that does work between steps (learner/actor_learner.h).
  // begin(): the optimizer, the resume from the newest checkpoint (the objective's state too),
  // parameters broadcast to every rank, the evaluation at start when asked.
  void begin();
  int64_t step() const;                       // optimizer steps completed
  bool lead() const;                          // this rank writes checkpoints, metrics and the model
  int64_t steps() const { return o_.steps; }  // in the whole run
  bool done() const { return step() >= o_.steps; }
  // One optimizer step over grad_accum micro-batches, and its metrics. True when a stop was
  // requested (SIGINT/SIGTERM on any rank): the caller then ends with interrupted().
  bool train_step();
  // A checkpoint every checkpoint_every steps before the last, or now when forced. With
  // background_checkpoints the lead rank writes it on the writer's thread (after waiting for the
  // one before) and `written` runs there once it is whole on disk, or `failed` if it cannot be
  // written; otherwise it is written now and neither is called (the caller goes on as after any
  // write). While one may be kWriting, whatever `written` does (publish) must not also be done
  // from the caller's thread without wait_for_checkpoint() first.
  enum class Checkpoint { kNone, kWritten, kWriting };
  Checkpoint checkpoint_if_due(bool force = false, std::function<void(const CheckpointSnapshot&)> written = {},
                               std::function<void(const std::string&)> failed = {});
  void wait_for_checkpoint();                    // until no checkpoint is being written; rethrows a failed write's error
  double last_checkpoint_write_seconds() const;  // wall seconds of the last background write (0: none yet)
  void evaluate_if_due();                        // every eval_every steps before the last
  void log(const Scalars& s);                    // metrics at the current step (the lead rank writes)
  // Seconds of the steps since the last call, by phase (batch, forward_backward, gradient_sync,
  // optimizer), as "<prefix><phase>".
  Scalars take_phase_seconds(const std::string& prefix) { return phases_.take(prefix); }
  // Both wait for a checkpoint being written in the background first.
  TrainResult interrupted();  // checkpoint now, report the stop
  TrainResult finish();       // final evaluation, checkpoint and model

 private:
  struct Run;  // state between begin() and the end of the run
  void evaluate();
  std::string save();  // now, after any background write
  void save_in_background(std::function<void(const CheckpointSnapshot&)> written, std::function<void(const std::string&)> failed);
  void log_step(double loss, double lr, double grad_norm, int64_t tokens, const Scalars& extra);

  std::shared_ptr<DataParallel> dp_;
  TrainOptions o_;
  Transformer model_;
  Objective& objective_;
  std::string run_config_, tokenizer_file_;
  std::unique_ptr<Run> run_;
  PhaseTimes phases_;
};

// Installs SIGINT/SIGTERM handlers that ask running loops to checkpoint and stop.
void install_stop_signal_handlers();
bool stop_requested();

}  // namespace keel
