// The one model loader every role uses: a model directory (core/checkpoint.h) to a model with the
// heads the role needs, on its device, with the tokenizer it was trained with:
//   config.json -> heads -> model.safetensors -> device, and the tokenizer file beside them.
// Used by the learners (policy, reference, reward model, critic), actors, generation and scorers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "core/tokenizer.h"
#include "core/transformer.h"

namespace keel {

struct ModelLoadOptions {
  // Heads the role trains, added when the directory's config has none. A value head starts at
  // its construction value (PPO's policy); a reward head (and only then the whole model, before
  // the weights overwrite the body) is initialised from head_seed.
  bool value_head = false;
  bool reward_head = false;
  bool drop_reward_head = false;  // a critic from a reward model reads the score head's tensors instead
  uint64_t head_seed = 1;
  torch::Device device = torch::kCPU;
  static ModelLoadOptions on(torch::Device d) {
    ModelLoadOptions o;
    o.device = d;
    return o;
  }
};

struct LoadedModel {
  Transformer model{nullptr};
  std::string tokenizer_file;  // in the model directory
  std::unique_ptr<Tokenizer> tokenizer;
};

// The model alone. Missing or misshapen tensors are errors that name the tensor.
Transformer load_model_as(const std::string& dir, const ModelLoadOptions& o);
// The model and its tokenizer; a directory without a tokenizer is an error naming it.
LoadedModel load_model_dir(const std::string& dir, const ModelLoadOptions& o = {});
// The tokenizer file of a model directory; an error naming the directory when there is none.
std::string require_tokenizer_file(const std::string& dir);

}  // namespace keel
