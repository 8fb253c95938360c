#include "core/model_config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

using nlohmann::json;

const char* family_name(Family f) { return f == Family::kGpt2 ? "gpt2" : "llama"; }

Family ModelConfig::parse_family(const std::string& name) {
  if (name == "gpt2") return Family::kGpt2;
  if (name == "llama") return Family::kLlama;
  KEEL_FAIL("unknown model family '" << name << "' (expected gpt2 or llama)");
}

int64_t ModelConfig::ffn_dim() const {
  if (d_ff > 0) return d_ff;
  if (family == Family::kGpt2) return 4 * d_model;
  int64_t h = (8 * d_model) / 3;
  return ((h + 63) / 64) * 64;
}

int64_t ModelConfig::num_parameters() const {
  const int64_t d = d_model, f = ffn_dim(), kv = kv_heads() * head_dim();
  int64_t per_layer, extra;
  if (family == Family::kGpt2) {
    per_layer = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d);
    extra = vocab_size * d + max_positions * d + 2 * d;
  } else {
    per_layer = 2 * d + d * d * 2 + 2 * d * kv + 3 * d * f;
    extra = vocab_size * d + d + (tie_embeddings ? 0 : vocab_size * d);
  }
  return n_layer * per_layer + extra;
}

void ModelConfig::validate() const {
  KEEL_CHECK(vocab_size > 0, "config: vocab_size must be positive, got " << vocab_size);
  KEEL_CHECK(d_model > 0 && n_layer > 0 && n_head > 0, "config: d_model, n_layer and n_head must be positive");
  KEEL_CHECK(d_model % n_head == 0, "config: d_model " << d_model << " is not divisible by n_head " << n_head);
  KEEL_CHECK(n_head % kv_heads() == 0, "config: n_head " << n_head << " is not a multiple of num_key_value_heads " << kv_heads());
  KEEL_CHECK(family != Family::kLlama || head_dim() % 2 == 0, "config: RoPE needs an even head dim");
  KEEL_CHECK(family != Family::kGpt2 || kv_heads() == n_head, "config: GPT-2 has no grouped-query attention");
  KEEL_CHECK(family != Family::kGpt2 || tie_embeddings, "config: GPT-2 ties its embeddings");
  KEEL_CHECK(max_positions > 0, "config: max_positions must be positive");
  for (int64_t id : {bos_id, eos_id, pad_id})
    KEEL_CHECK(id < vocab_size, "config: special token id " << id << " is outside vocab_size " << vocab_size);
  KEEL_CHECK(pad_id < 0 || pad_id != eos_id,
             "config: pad_token_id equals eos_token_id (" << pad_id << "); PAD must be distinct from EOS");
}

std::string ModelConfig::to_hf_json() const {
  json j;
  auto opt_id = [](int64_t id) { return id >= 0 ? json(id) : json(nullptr); };
  j["vocab_size"] = vocab_size;
  j["bos_token_id"] = opt_id(bos_id);
  j["eos_token_id"] = opt_id(eos_id);
  j["pad_token_id"] = opt_id(pad_id);
  j["tie_word_embeddings"] = tie_embeddings;
  if (family == Family::kGpt2) {
    j["model_type"] = "gpt2";
    j["architectures"] = {"GPT2LMHeadModel"};
    j["n_embd"] = d_model;
    j["n_layer"] = n_layer;
    j["n_head"] = n_head;
    j["n_inner"] = d_ff > 0 ? json(d_ff) : json(nullptr);
    j["n_positions"] = max_positions;
    j["n_ctx"] = max_positions;
    j["layer_norm_epsilon"] = norm_eps;
    j["activation_function"] = "gelu_new";
    j["resid_pdrop"] = 0.0;
    j["embd_pdrop"] = 0.0;
    j["attn_pdrop"] = 0.0;
  } else {
    j["model_type"] = "llama";
    j["architectures"] = {"LlamaForCausalLM"};
    j["hidden_size"] = d_model;
    j["num_hidden_layers"] = n_layer;
    j["num_attention_heads"] = n_head;
    j["num_key_value_heads"] = kv_heads();
    j["intermediate_size"] = ffn_dim();
    j["max_position_embeddings"] = max_positions;
    j["rms_norm_eps"] = norm_eps;
    j["rope_theta"] = rope_theta;
    j["hidden_act"] = "silu";
  }
  j["keel"] = {{"value_head", value_head}, {"reward_head", reward_head}};
  if (reward_head) j["keel"]["reward_norm"] = {{"gain", reward_gain}, {"bias", reward_bias}};
  return j.dump(2) + "\n";
}

namespace {
template <typename T>
T field(const json& j, const char* key, const std::string& origin) {
  KEEL_CHECK_KIND(ErrorKind::kCorruptData, j.contains(key) && !j[key].is_null(), origin << ": missing field '" << key << "'");
  try {
    return j[key].get<T>();
  } catch (const json::exception& e) {
    KEEL_FAIL_KIND(ErrorKind::kCorruptData, origin << ": field '" << key << "' has the wrong type: " << e.what());
  }
}
template <typename T>
T field_or(const json& j, const char* key, T dflt) {
  return (j.contains(key) && !j[key].is_null()) ? j[key].get<T>() : dflt;
}
int64_t token_id(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return -1;
  if (j[key].is_array()) return j[key].empty() ? -1 : j[key][0].get<int64_t>();  // Llama 3 lists EOS ids
  return j[key].get<int64_t>();
}
}  // namespace

ModelConfig ModelConfig::from_hf_json(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    KEEL_FAIL_KIND(ErrorKind::kCorruptData, origin << ": not valid JSON: " << e.what());
  }
  ModelConfig c;
  const auto type = field<std::string>(j, "model_type", origin);
  c.vocab_size = field<int64_t>(j, "vocab_size", origin);
  c.bos_id = token_id(j, "bos_token_id");
  c.eos_id = token_id(j, "eos_token_id");
  c.pad_id = token_id(j, "pad_token_id");
  if (type == "gpt2") {
    c.family = Family::kGpt2;
    c.d_model = field<int64_t>(j, "n_embd", origin);
    c.n_layer = field<int64_t>(j, "n_layer", origin);
    c.n_head = field<int64_t>(j, "n_head", origin);
    c.d_ff = field_or<int64_t>(j, "n_inner", 0);
    c.max_positions = field<int64_t>(j, "n_positions", origin);
    c.norm_eps = field_or<double>(j, "layer_norm_epsilon", 1e-5);
    c.tie_embeddings = field_or<bool>(j, "tie_word_embeddings", true);
    const auto act = field_or<std::string>(j, "activation_function", "gelu_new");
    KEEL_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh",
               origin << ": activation_function '" << act << "' is not supported (gelu_new)");
  } else if (type == "llama") {
    c.family = Family::kLlama;
    c.d_model = field<int64_t>(j, "hidden_size", origin);
    c.n_layer = field<int64_t>(j, "num_hidden_layers", origin);
    c.n_head = field<int64_t>(j, "num_attention_heads", origin);
    c.n_kv_head = field_or<int64_t>(j, "num_key_value_heads", c.n_head);
    c.d_ff = field<int64_t>(j, "intermediate_size", origin);
    c.max_positions = field_or<int64_t>(j, "max_position_embeddings", 2048);
    c.norm_eps = field_or<double>(j, "rms_norm_eps", 1e-6);
    c.rope_theta = field_or<double>(j, "rope_theta", 10000.0);
    c.tie_embeddings = field_or<bool>(j, "tie_word_embeddings", false);
    KEEL_CHECK(!j.contains("rope_scaling") || j["rope_scaling"].is_null(), origin << ": rope_scaling is not supported");
    const auto act = field_or<std::string>(j, "hidden_act", "silu");
    KEEL_CHECK(act == "silu", origin << ": hidden_act '" << act << "' is not supported (silu)");
  } else {
    KEEL_FAIL(origin << ": model_type '" << type << "' is not supported (gpt2 or llama)");
  }
  if (j.contains("keel")) {
    c.value_head = field_or<bool>(j["keel"], "value_head", false);
    c.reward_head = field_or<bool>(j["keel"], "reward_head", false);
    if (j["keel"].contains("reward_norm")) {
      c.reward_gain = field_or<double>(j["keel"]["reward_norm"], "gain", 1.0);
      c.reward_bias = field_or<double>(j["keel"]["reward_norm"], "bias", 0.0);
    }
  }
  try {
    c.validate();
  } catch (const KeelError& e) {
    KEEL_FAIL_KIND(e.kind(), origin << ": " << e.what());
  }
  return c;
}

}  // namespace keel
