// Left padding of token sequences for the model: a batch of prompts (or whole sequences) becomes
// tokens [B, L], key mask [B, L] and position ids [B, L] (0 at each row's first token), with
// every row's last token in the last column. Used by the sampler and the reward-model scorer.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace keel {

struct PaddedBatch {
  torch::Tensor tokens, key_mask, positions;
};
// Every sequence needs at least one token (an error otherwise); `pad` fills the left.
PaddedBatch left_pad(const std::vector<std::vector<int32_t>>& prompts, int32_t pad);

}  // namespace keel
