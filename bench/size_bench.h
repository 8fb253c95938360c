// Measurements at real model sizes (issue 14), run by keel_bench and compared by bench/size.sh:
//   bandwidth               the machine's memory bandwidth: read (a sum) and copy, GB/s
//   decode DIR B N [DTYPE]  KV-cached sampling of N new tokens for B prompts of 16 tokens with the
//                           model in DIR, decoding weights float32 or bfloat16: tokens/s, time of
//                           one decoding step, bytes it reads, the read bandwidth of the same
//                           process just before and after, and the step's share of that roofline
//   decode_pair DIR B R     bfloat16 against float32 decoding weights in one process: R rounds of
//                           16 steps with each, alternating; medians of the steps and of the
//                           per-round speedups (paired, so the VM's drift between rounds cancels)
//   continuous DIR S P G    P prompts of 16 tokens, G responses each, with long-tailed lengths
//                           (size_bench.cc: median 20, mean ~33, up to 256): static batching S
//                           responses at a time against continuous batching over S rows; useful
//                           tokens/s of both
//   check DIR INPUTS REF    keel's logits for INPUTS["tokens"] against REF["logits"] (Python's), and
//                           KV-cached decoding (prefill half, then one token at a time) against
//                           keel's full recomputation, and continuous-batched sampling's log-probs
//                           against a full recomputation: max |difference|
//   load DIR                load_model_as of the model in DIR: seconds and growth of the peak RSS,
//                           beside one plain read of its model.safetensors into fresh memory
// Each prints one JSON line.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel::bench {

// The q-quantile of v (nearest rank; 0 for an empty v).
double quantile(std::vector<double> v, double q);

void bandwidth();
void decode(const std::string& dir, int64_t batch, int64_t new_tokens, const std::string& dtype);
void decode_pair(const std::string& dir, int64_t batch, int rounds);
void continuous(const std::string& dir, int64_t slots, int64_t prompts, int64_t group);
void check(const std::string& dir, const std::string& inputs, const std::string& ref);
void load(const std::string& dir);

}  // namespace keel::bench
