// PPO's separate critic: a model with a value head, loaded from a reward model or an SFT model
// that shares the policy's tokenizer. A reward model's score head, with its normalisation
// (value = gain * score + bias), becomes the initial value head, so the critic starts out
// predicting the reward model's score at every token; from an SFT model the value head starts at 0.
#pragma once

#include <string>

#include "core/transformer.h"

namespace keel {

// Throws naming the problem when `dir` is no model or uses another vocabulary or tokenizer.
Transformer load_critic(const std::string& dir, const ModelConfig& policy_config, const std::string& policy_tokenizer_identity);

}  // namespace keel
