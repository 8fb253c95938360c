// Preference pairs as model inputs, shared by reward-model training, DPO and reference
// precomputation. P pairs become 2P right-padded rows (the P chosen rows, then the P rejected),
// each prompt + response truncated to max_len as a pair: the prompt is cut once for both sides
// (its first token, BOS, kept; then its newest tokens, down to half the row), then each response
// loses its last tokens, so chosen and rejected always condition on the same prompt.
#pragma once

#include <functional>
#include <vector>

#include "core/transformer.h"
#include "learner/objective.h"
#include "replay/preference_buffer.h"

namespace keel {

// Where the pairs of batch k come from (a shuffled buffer stream, or the freshest online pairs).
using PairSource = std::function<std::vector<PreferencePair>(int64_t index)>;

struct PairBatch : MicroBatch {
  int64_t pairs = 0;
  torch::Tensor ids;        // [2P, T] int64 token ids
  torch::Tensor key_mask;   // [2P, T] bool, false on padding
  torch::Tensor loss_mask;  // [2P, T] float, 1 where the token is a response token
  torch::Tensor lengths;    // [2P] float response tokens per row (after truncation)
  torch::Tensor ref;        // [2P] cached reference log-probs, or undefined when a pair lacks them
  torch::Tensor rewards;    // [2P] metadata rewards (NaN when unknown)
  int64_t truncated = 0;    // pairs that were cut to max_len
};

// Checks token ids against `vocab` (a KeelError names the pair's side and the id).
PairBatch make_pair_batch(const std::vector<PreferencePair>& pairs, int64_t max_len, int64_t pad_id, int64_t vocab,
                          torch::Device device);

// Summed log-probs [2P] of each row's response tokens under `model` (after the shift).
torch::Tensor pair_logprobs(Transformer& model, const PairBatch& batch);

// The reward head [2P] read at each row's last token.
torch::Tensor pair_rewards(Transformer& model, const PairBatch& batch);

// A model's identity for cached reference log-probs: FNV-1a of its weights file.
std::string model_identity(const std::string& model_dir);
// The key of cached reference log-probs: the model's identity and the version of the pair cut
// above, so that caches made with another cut are recomputed, not used on other tokens.
std::string reference_cache_key(const std::string& model_dir);

}  // namespace keel
