// ModelConfig: the architecture of a decoder-only transformer, in two families.
// Stored on disk as a Hugging Face config.json (GPT2LMHeadModel / LlamaForCausalLM field names),
// so a model exported from Python loads here and keel's models load in Python.
#pragma once

#include <cstdint>
#include <string>

namespace keel {

enum class Family {
  kGpt2,   // learned positions, LayerNorm, GELU (tanh), tied embeddings, fused qkv (Conv1D layout)
  kLlama,  // RoPE, RMSNorm, SwiGLU, grouped-query attention
};

struct ModelConfig {
  Family family = Family::kGpt2;
  int64_t vocab_size = 8192;
  int64_t d_model = 256;
  int64_t n_layer = 4;
  int64_t n_head = 4;
  int64_t n_kv_head = 0;  // Llama GQA; 0 means n_head
  int64_t d_ff = 0;       // 0 means 4*d_model (GPT-2) or Llama's 8/3*d rounded up to 64
  int64_t max_positions = 1024;
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  bool tie_embeddings = true;  // lm head shares the token embedding
  int64_t bos_id = -1;
  int64_t eos_id = -1;
  int64_t pad_id = -1;       // must differ from eos_id when both are set
  bool value_head = false;   // scalar head "value_head" (PPO critic), zero-initialised
  bool reward_head = false;  // scalar head "score" (reward model), as in *ForSequenceClassification
  double reward_gain = 1.0;  // reward = gain * score(h) + bias: normalisation fitted after reward training
  double reward_bias = 0.0;

  int64_t kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int64_t head_dim() const { return d_model / n_head; }
  int64_t ffn_dim() const;
  // Parameters of the body and lm head (no scalar heads), counting tied weights once.
  int64_t num_parameters() const;

  // Throws KeelError naming the first impossible field.
  void validate() const;

  std::string to_hf_json() const;  // config.json text
  static ModelConfig from_hf_json(const std::string& text, const std::string& origin);
  static Family parse_family(const std::string& name);  // "gpt2" | "llama"
};

const char* family_name(Family f);

}  // namespace keel
