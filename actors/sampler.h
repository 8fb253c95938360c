// Batched sampling with the KV cache: the generation step of actors and of `keel generate`.
// Prompts of unequal length are left-padded; attention masks and position ids make each row's
// logits equal to those of the row run alone. Behaviour log-probs are recorded under
// softmax(logits / temperature), the distribution PPO's ratio must use (rlhf-math.md §1.1).
#pragma once

#include <cstdint>
#include <vector>

#include "core/padded_batch.h"
#include "core/transformer.h"

namespace keel {

struct SamplingConfig {
  double temperature = 1.0;  // 0 = greedy (log-probs then under temperature 1)
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // nucleus mass kept; 1 = off
  int64_t max_new_tokens = 64;
  bool stop_at_eos = true;
  uint64_t seed = 1;
  // Rows decoded at once. 0: every prompt at once, until the longest response ends (static
  // batching). N > 0: continuous batching over N rows (actors/continuous_sampler.h): a row whose
  // response ends takes the next prompt, and identical consecutive prompts are prefilled once.
  // Not part of the sampling distribution: the behaviour log-probs are the same either way.
  int64_t slots = 0;
  void validate() const;
};

struct Samples {
  std::vector<std::vector<int32_t>> responses;  // generated ids; the EOS is included when sampled
  std::vector<std::vector<float>> logprobs;     // [i][t]: behaviour log-prob of responses[i][t]
  std::vector<bool> finished;                   // true when the response ends with EOS
  int64_t prefill_rows = 0;                     // prompts run through a prefill (identical consecutive ones once, with slots)
  int64_t steps = 0;                            // decoding steps after the prefills
};

// Samples one response per prompt. `eos` ends a row (when stop_at_eos); `pad` fills left padding.
// `max_new` (optional, one per prompt, each in 1 .. config.max_new_tokens) bounds each response
// on its own. Deterministic for a given seed, batch, slots and thread count.
Samples sample(Transformer& model, const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& config, int32_t eos,
               int32_t pad, const std::vector<int64_t>& max_new = {});

// Response-length bounds per prompt: `max_new` checked against the prompts and the config, or
// config.max_new_tokens for every prompt when it is empty.
std::vector<int64_t> response_limits(const std::vector<int64_t>& max_new, size_t prompts, const SamplingConfig& config);

// One token per row of `logits` [B, V] (float32, CPU) under `config` (temperature, top-k, top-p;
// greedy at temperature 0), with its behaviour log-prob under softmax(logits / temperature).
// Draws one uniform number per row from `gen`, in row order.
std::pair<torch::Tensor, torch::Tensor> choose_tokens(const torch::Tensor& logits, const SamplingConfig& config,
                                                      at::Generator& gen);

// One index per row of `probs` [B, V] (float32, CPU, non-negative, not necessarily normalised),
// index v with probability probs[b, v] / sum_v probs[b, v]; one uniform number per row from `gen`.
// A row without mass (all zero, NaN or infinite) is an error naming the row.
torch::Tensor draw_categorical(const torch::Tensor& probs, at::Generator& gen);

}  // namespace keel
