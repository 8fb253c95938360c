#include "core/model_loader.h"

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/safetensors_file.h"

namespace keel {

Transformer load_model_as(const std::string& dir, const ModelLoadOptions& o) {
  auto config = load_model_config(dir);
  const bool new_reward_head = o.reward_head && !config.reward_head;
  config.value_head = config.value_head || o.value_head;
  config.reward_head = (config.reward_head || o.reward_head) && !o.drop_reward_head;
  // A new reward head is initialised from head_seed (and, as init_weights does, the body before it,
  // which the file's weights then overwrite).
  auto model = load_model_weights(config, SafetensorsFile(model_weights_path(dir)), /*allow_new_heads=*/true,
                                  new_reward_head ? o.head_seed : 0);
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
