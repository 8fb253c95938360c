// Continuous batching: sampling with fewer decoding rows than prompts. A row whose response ends
// takes the next prompt at the next step, instead of idling until the batch's longest response
// ends (static batching, actors/sampler.h). Identical consecutive prompts (the G responses of one
// prompt in a GRPO group) are prefilled once: each row that takes the prompt copies the prefill's
// keys and values into its own slots of a per-row KV cache (core/transformer.h), so the prompt's
// forward pass runs once per group while every row decodes on its own afterwards. When no prompt
// is left and half of the rows idle, the cache keeps only the busy rows, so the last responses do
// not pay for a full batch.
//
// Every response's behaviour log-probs are those of its own computation, under the same
// SamplingConfig contract as static batching; only the interleaving of rows differs, so the
// random draws (one per row per step, in row order) differ from static batching's.
#pragma once

#include <cstdint>
#include <vector>

#include "actors/sampler.h"

namespace keel {

// `limits`: each response's bound in new tokens (response_limits). sample() calls this when
// config.slots > 0; rows = min(config.slots, prompts).
Samples sample_continuous(Transformer& model, const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& config,
                          int32_t eos, int32_t pad, const std::vector<int64_t>& limits);

}  // namespace keel
