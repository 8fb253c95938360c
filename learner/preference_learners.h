// The composition roots of the learners on preference buffers: `keel reward train` (a
// Bradley-Terry reward model, optionally normalised) and `keel dpo` (the DPO family). Both read
// the training buffer through a shuffled prefetching stream (replay/preference_stream.h) and hold
// out pairs for evaluation; DPO decides here where its reference log-probs come from (the
// buffer's cache when it was computed by this reference at this truncation, else the reference
// model), and `--precompute-ref` fills that cache. Commands bind flags to these structs.
#pragma once

#include <cstdint>
#include <string>

#include "learner/dpo.h"
#include "learner/reward_model.h"
#include "learner/train_loop.h"

namespace keel {

struct PreferenceDataOptions {
  std::string train;            // the training buffer
  std::string eval_buffer;      // held-out buffer ("" = hold out the training buffer's last pairs)
  int64_t eval_pairs = -1;      // without eval_buffer: -1 = 10% of the training buffer, at most 512; 0 = none
  int64_t batch_pairs = 8;      // pairs per micro-batch
  int64_t shuffle_window = 64;  // blocks of 64 pairs shuffled together
};

struct RewardTrainRunOptions {
  std::string init;  // model directory to start from; a reward head is added
  std::string device = "cpu";
  bool normalize = false;  // afterwards, fit gain and bias so held-out rewards have mean 0, std 1
  TrainOptions train;
  RewardTrainOptions reward;
  PreferenceDataOptions data;
  std::string run_config;
  RewardTrainRunOptions();  // the reward model's training defaults
};
// Returns the process exit code (3: stopped by a signal).
int run_reward_training(RewardTrainRunOptions o);

enum class ReferenceMode { kAuto, kCached, kOnline };
ReferenceMode parse_reference_mode(const std::string& s);  // auto | cached | online

struct DpoRunOptions {
  std::string init;       // the policy's start
  std::string reference;  // "" = init
  std::string device = "cpu";
  ReferenceMode reference_mode = ReferenceMode::kAuto;
  bool precompute_reference = false;  // fill the buffers' reference cache and return
  TrainOptions train;
  DpoOptions dpo;
  PreferenceDataOptions data;
  std::string run_config;
  DpoRunOptions();  // DPO's training defaults
};
int run_dpo(DpoRunOptions o);

}  // namespace keel
