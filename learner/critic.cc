#include "learner/critic.h"

#include <iostream>

#include "core/checkpoint.h"
#include "core/model_loader.h"
#include "core/safetensors_file.h"
#include "core/error.h"
#include "core/tokenizer.h"

namespace keel {

Transformer load_critic(const std::string& dir, const ModelConfig& policy_config, const std::string& policy_tokenizer_identity) {
  auto config = load_model_config(dir);
  KEEL_CHECK(config.vocab_size == policy_config.vocab_size, "critic " << dir << " has a vocabulary of " << config.vocab_size
                                                                      << " tokens, the policy " << policy_config.vocab_size
                                                                      << ": they must share the tokenizer");
  const auto critic_tok = model_tokenizer_file(dir);
  KEEL_CHECK(critic_tok.empty() || load_tokenizer(critic_tok)->identity() == policy_tokenizer_identity,
             "critic " << dir << " was trained with another tokenizer (" << critic_tok << ") than the policy");
  ModelLoadOptions lo;
  lo.value_head = true;
  lo.drop_reward_head = true;
  Transformer critic = load_model_as(dir, lo);
  const SafetensorsFile file(model_weights_path(dir));
  if (!file.contains("value_head.weight") && file.contains("score.weight")) {
    torch::NoGradGuard ng;
    const auto full = load_model_config(dir);
    auto params = critic->named_parameters();
    params["value_head.weight"].copy_(file.read("score.weight").to(torch::kFloat32) * full.reward_gain);
    params["value_head.bias"].fill_(full.reward_bias);
    std::cerr << "critic: value head initialised from the reward model's score head in " << dir << "\n";
  }
  return critic;
}

}  // namespace keel
