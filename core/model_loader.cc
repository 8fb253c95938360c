#include "core/model_loader.h"

#include "core/checkpoint.h"
#include "core/error.h"

namespace keel {

Transformer load_model_as(const std::string& dir, const ModelLoadOptions& o) {
  auto config = load_model_config(dir);
  const bool new_reward_head = o.reward_head && !config.reward_head;
  config.value_head = config.value_head || o.value_head;
  config.reward_head = (config.reward_head || o.reward_head) && !o.drop_reward_head;
  Transformer model(config);
  if (new_reward_head) model->init_weights(o.head_seed);  // the reward head; the body is overwritten next
  load_weights(model, load_safetensors(model_weights_path(dir)), dir, /*allow_new_heads=*/true);
  model->to(o.device);
  return model;
}

std::string require_tokenizer_file(const std::string& dir) {
  const auto f = model_tokenizer_file(dir);
  KEEL_CHECK(!f.empty(), "model directory " << dir
                                            << " holds no tokenizer (tokenizer.model or tokenizer.json); "
                                               "copy in the one the model was trained with");
  return f;
}

LoadedModel load_model_dir(const std::string& dir, const ModelLoadOptions& o) {
  LoadedModel m;
  m.tokenizer_file = require_tokenizer_file(dir);
  m.tokenizer = load_tokenizer(m.tokenizer_file);
  m.model = load_model_as(dir, o);
  return m;
}

}  // namespace keel
