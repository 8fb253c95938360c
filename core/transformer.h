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
// Two layouts. Shared (the default): every row's tokens go to the same slots, `length` of them
// (left padding lines prompts up). Per row (continuous batching): row b holds its own sequence in
// slots 0 .. row_length[b]-1, so one row can start a new sequence while the others go on; such a
// cache takes prompts through cache_take_prefix and then one token per row per step.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // per layer [B, kv_heads, capacity, head_dim]
  torch::Tensor key_mask;           // [B, capacity] bool: true where the slot holds a real token
  int64_t length = 0;               // shared: slots filled so far; per row: the longest row's
  std::vector<int64_t> row_length;  // per row: each row's filled slots; empty in the shared layout
  int64_t capacity() const { return key_mask.defined() ? key_mask.size(1) : 0; }
  bool per_row() const { return !row_length.empty(); }
};

// Per-row caches: row `row` of `cache` takes `n` tokens of row `src_row` of a shared-layout
// `prefix` (its slots from .. from+n-1, e.g. a left-padded prefill's real tokens) as its slots
// 0 .. n-1; whatever the row held before is masked out. Several rows may take the same prefix
// (the responses of one prompt share its prefill).
void cache_take_prefix(KVCache& cache, int64_t row, const KVCache& prefix, int64_t src_row, int64_t from, int64_t n);

// Per-row caches: keeps only `rows` (in that order; row i of the result is rows[i] before), so
// that decoding steps stop paying for rows that have nothing left to do. Copies what it keeps.
void cache_keep_rows(KVCache& cache, const std::vector<int64_t>& rows);

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
struct ProjectionImpl;  // a weight matrix [out, in] (transformer.cc)

// How a new model's parameters start: init_weights(0), or as LibTorch's modules leave them, for a
// load that overwrites them (core/checkpoint.h) and need not pay for keel's draws (the modules'
// own default draws still run).
enum class WeightsInit { kSeedZero, kForLoad };

class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const ModelConfig& config, WeightsInit init = WeightsInit::kSeedZero);

  // Final-norm hidden states [B, T, d]. With a cache the T tokens attend to its filled slots
  // and their keys/values are appended (cache->length grows by T). With a per-row cache T is 1:
  // row b's token goes to slot row_length[b] and attends to that row's slots only; `positions`
  // are required (the row's own position ids).
  torch::Tensor hidden(const ForwardInputs& in, KVCache* cache = nullptr);
  torch::Tensor logits(const torch::Tensor& hidden);  // [B, T, V]
  // summed_cross_entropy(logits(hidden), targets). With activation checkpointing on (and
  // autograd), the head and the loss run fused in blocks of rows (core/fused_cross_entropy.h),
  // so that a step never holds the whole [B, T, V] logits, their log-softmax and gradient;
  // `block_rows` rows per block (0: about 16M logits a block).
  torch::Tensor summed_cross_entropy_of(const torch::Tensor& hidden, const torch::Tensor& targets, int64_t block_rows = 0);
  torch::Tensor value(const torch::Tensor& hidden);  // [B, T]; requires config.value_head
  // [B, T] = reward_gain * score(hidden) + reward_bias; requires config.reward_head.
  torch::Tensor reward(const torch::Tensor& hidden);
  // Stores a reward normalisation (written to config.json with the model).
  void set_reward_norm(double gain, double bias);

  // An empty cache for `batch` sequences of up to `capacity` tokens, on this model's device/dtype;
  // `per_row` chooses the per-row layout (continuous batching).
  KVCache make_cache(int64_t batch, int64_t capacity, bool per_row = false) const;

  // Re-initialises every parameter from `seed` (GPT-2 / Llama conventions; value head zero).
  void init_weights(uint64_t seed);
  // Sets the value head, if any, to its initial value (zero) alone: no draws.
  void init_value_head();

  // With kBFloat16, decoding steps (products of few rows, core/linear.h) read bfloat16 copies of
  // the weight matrices, taken now: call again after every change of the weights (an actor, after
  // each new version). kFloat32 (the default) drops the copies. Training is unchanged, and on the
  // CPU prefill too; on a CUDA device every product outside autograd is the device's bfloat16
  // product (core/linear.h, decoding_copy_product).
  void set_decode_dtype(torch::ScalarType dtype);
  torch::ScalarType decode_dtype() const { return decode_weights_ ? torch::kBFloat16 : torch::kFloat32; }

  // With `on`, training forward passes (autograd on, no cache) keep only each block's input and
  // recompute the block during backward (core/activation_checkpoint.h): less memory, one more
  // forward pass of the blocks. Gradients are those of the plain pass.
  void set_activation_checkpointing(bool on) { activation_checkpointing_ = on; }
  bool activation_checkpointing() const { return activation_checkpointing_; }

  const ModelConfig& config() const { return config_; }
  torch::Device device() const;

 private:
  torch::Tensor per_row_step(const ForwardInputs& in, KVCache& cache);

  ModelConfig config_;
  std::shared_ptr<TransformerBody> body_;
  std::shared_ptr<ProjectionImpl> lm_head_;  // Llama untied only
  torch::nn::Linear value_head_{nullptr};    // "value_head", [1, d] + bias
  torch::nn::Linear score_{nullptr};         // "score", [1, d], no bias
  std::shared_ptr<DecodeWeights> decode_weights_;
  bool activation_checkpointing_ = false;
};
TORCH_MODULE(Transformer);

// Sum over positions of -log p(target) for targets != -100 (cross-entropy, reduction sum). Scalar.
torch::Tensor summed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets);

// Log-probabilities [B, T] of `targets` under softmax(logits / temperature).
torch::Tensor token_logprobs(const torch::Tensor& logits, const torch::Tensor& targets, double temperature = 1.0);

}  // namespace keel
