// Training checkpoints: a model directory plus the optimizer's moments (optimizer.safetensors,
// tensors "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step"; a companion's as
// "<name>/<param>.exp_avg", ...), each companion model as the model directory <name>/, the CPU RNG state and the step
// (trainer_state.json), and the resolved run configuration (run_config.ini). Written to a
// temporary directory and renamed, then checkpoints/latest is replaced atomically.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/safetensors.h"
#include "core/transformer.h"
#include "learner/objective.h"

namespace keel {

struct TrainerState {
  int64_t step = 0;  // optimizer steps completed
  int64_t tokens_seen = 0;
};

// Everything a checkpoint holds, taken out of a run: the tensors either refer to the live ones (to
// be written at once) or are copies in CPU memory (to be written while training goes on).
struct CheckpointSnapshot {
  struct Model {
    std::string name;  // "" for the trained model, else the companion's directory
    ModelConfig config;
    TensorMap tensors;
  };
  TrainerState state;
  std::vector<Model> models;  // the trained model first, then each companion
  TensorMap optimizer;        // the optimizer's moments and the CPU RNG state (optimizer.safetensors)
  std::string run_config, tokenizer_file, objective_state;
};

// Takes the snapshot. `copy`: the tensors are copied to CPU memory of their own, into the tensors
// of `reuse` (an earlier snapshot nothing else holds) where name, shape and dtype match: no fresh
// allocation, whose pages would be faulted in and zeroed again for every checkpoint.
CheckpointSnapshot snapshot_training_state(Transformer& model, torch::optim::AdamW& opt, const TrainerState& state,
                                           const std::string& run_config, const std::string& tokenizer_file,
                                           const std::string& objective_state, const std::vector<Companion>& companions,
                                           bool copy, CheckpointSnapshot reuse = {});

// Writes checkpoints/step-<step> under `run_dir`, keeping the newest `keep`; returns its path.
std::string write_training_checkpoint(const std::string& run_dir, const CheckpointSnapshot& snapshot, int64_t keep);

// The two at once, the tensors written from where they are.
std::string save_training_checkpoint(const std::string& run_dir, Transformer& model, torch::optim::AdamW& opt,
                                     const TrainerState& state, const std::string& run_config, const std::string& tokenizer_file,
                                     int64_t keep, const std::string& objective_state = "",
                                     const std::vector<Companion>& companions = {});

// The directory write_training_checkpoint writes for `step`.
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

// The newest complete checkpoint under run_dir, or "" when there is none.
std::string latest_checkpoint(const std::string& run_dir);

// Restores model weights, optimizer moments, RNG and returns the trainer state.
// `objective_state` receives objective_state.json ("" when absent).
TrainerState load_training_checkpoint(const std::string& dir, Transformer& model, torch::optim::AdamW& opt,
                                      std::string* objective_state = nullptr, const std::vector<Companion>& companions = {});

}  // namespace keel
