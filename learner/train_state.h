// Training checkpoints: a model directory plus the optimizer's moments (optimizer.safetensors,
// tensors "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step"; a companion's as
// "<name>/<param>.exp_avg", ...), each companion model as the model directory <name>/, the CPU RNG state and the step
// (trainer_state.json), and the resolved run configuration (run_config.ini). Written to a
// temporary directory and renamed, then checkpoints/latest is replaced atomically.
#pragma once

#include <torch/torch.h>

#include <string>

#include "core/transformer.h"
#include "learner/objective.h"

namespace keel {

struct TrainerState {
  int64_t step = 0;  // optimizer steps completed
  int64_t tokens_seen = 0;
};

// Writes checkpoints/step-<step> under `run_dir`; returns its path.
std::string save_training_checkpoint(const std::string& run_dir, Transformer& model, torch::optim::AdamW& opt,
                                     const TrainerState& state, const std::string& run_config, const std::string& tokenizer_file,
                                     int64_t keep, const std::string& objective_state = "",
                                     const std::vector<Companion>& companions = {});

// The newest complete checkpoint under run_dir, or "" when there is none.
std::string latest_checkpoint(const std::string& run_dir);

// Restores model weights, optimizer moments, RNG and returns the trainer state.
// `objective_state` receives objective_state.json ("" when absent).
TrainerState load_training_checkpoint(const std::string& dir, Transformer& model, torch::optim::AdamW& opt,
                                      std::string* objective_state = nullptr, const std::vector<Companion>& companions = {});

}  // namespace keel
