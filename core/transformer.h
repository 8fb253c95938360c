// Transformer: the decoder-only model every role shares (actor, reward service, learners).
// Two families chosen by ModelConfig::family. Parameter names are Hugging Face's
// (GPT2LMHeadModel: "transformer.h.0.attn.c_attn.weight"; LlamaForCausalLM:
// "model.layers.0.self_attn.q_proj.weight"), so named_parameters() is the checkpoint layout.
//
// Shapes: B batch, T new tokens, S = cached + new key slots, V vocabulary, d model width.
// Not thread-safe: one thread drives one instance (LibTorch ops inside use the intra-op pool).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "core/model_config.h"

namespace keel {

// Keys and values of earlier positions for incremental decoding, preallocated to a capacity.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // per layer [B, kv_heads, capacity, head_dim]
  torch::Tensor key_mask;           // [B, capacity] bool: true where the slot holds a real token
  int64_t length = 0;               // slots filled so far
  int64_t capacity() const { return key_mask.defined() ? key_mask.size(1) : 0; }
};

// One forward pass. Optional tensors may be left undefined.
struct ForwardInputs {
  torch::Tensor tokens;     // [B, T] int64
  torch::Tensor positions;  // [B, T] int64 position ids; default cache.length + (0..T-1)
  torch::Tensor key_mask;   // [B, T] bool, false for padding tokens (never attended to); default all true
  torch::Tensor segments;   // [B, T] int64 packed-document ids: no attention across ids; no cache allowed
};

// Body of one family (embedding, blocks, final norm); defined in transformer.cc.
class TransformerBody;
class DecodeWeights;

class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const ModelConfig& config);

  // Final-norm hidden states [B, T, d]. With a cache the T tokens attend to its filled slots
  // and their keys/values are appended (cache->length grows by T).
  torch::Tensor hidden(const ForwardInputs& in, KVCache* cache = nullptr);
  torch::Tensor logits(const torch::Tensor& hidden);  // [B, T, V]
  torch::Tensor value(const torch::Tensor& hidden);   // [B, T]; requires config.value_head
  // [B, T] = reward_gain * score(hidden) + reward_bias; requires config.reward_head.
  torch::Tensor reward(const torch::Tensor& hidden);
  // Stores a reward normalisation (written to config.json with the model).
  void set_reward_norm(double gain, double bias);

  // An empty cache for `batch` sequences of up to `capacity` tokens, on this model's device/dtype.
  KVCache make_cache(int64_t batch, int64_t capacity) const;

  // Re-initialises every parameter from `seed` (GPT-2 / Llama conventions; value head zero).
  void init_weights(uint64_t seed);

  // With kBFloat16, decoding steps (products of few rows, core/linear.h) read bfloat16 copies of
  // the weight matrices, taken now: call again after every change of the weights (an actor, after
  // each new version). kFloat32 (the default) drops the copies. Training and prefill are unchanged.
  void set_decode_dtype(torch::ScalarType dtype);
  torch::ScalarType decode_dtype() const { return decode_weights_ ? torch::kBFloat16 : torch::kFloat32; }

  const ModelConfig& config() const { return config_; }
  torch::Device device() const;

 private:
  ModelConfig config_;
  std::shared_ptr<TransformerBody> body_;
  torch::nn::Linear lm_head_{nullptr};     // Llama untied only
  torch::nn::Linear value_head_{nullptr};  // "value_head", [1, d] + bias
  torch::nn::Linear score_{nullptr};       // "score", [1, d], no bias
  std::shared_ptr<DecodeWeights> decode_weights_;
};
TORCH_MODULE(Transformer);

// Sum over positions of -log p(target) for targets != -100 (cross-entropy, reduction sum). Scalar.
torch::Tensor summed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets);

// Log-probabilities [B, T] of `targets` under softmax(logits / temperature).
torch::Tensor token_logprobs(const torch::Tensor& logits, const torch::Tensor& targets, double temperature = 1.0);

}  // namespace keel
