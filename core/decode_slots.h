// What the fused decoding blocks (core/llama_decode_block.h, core/gpt2_decode_block.h) share:
// where their rows keep their keys and values and what each row attends to (one layer's KV cache,
// each row's new slot in it, the attended span), and the scratch rows of a step.
#pragma once

#include <torch/torch.h>

#include <array>
#include <vector>

#include "core/decode_attention.h"

namespace keel {

struct DecodeSlots {
  torch::Tensor k_cache, v_cache;  // this layer's [B, KV, capacity, hd], contiguous float32
  std::vector<int64_t> write;      // row b's new key and value go to slot write[b] < span
  int64_t span = 0;                // every row attends to slots [0, span), masked by bias
  torch::Tensor bias;              // [B, 1, 1, span] additive, contiguous float32
  torch::Tensor cos, sin;          // Llama: [B, 1, 1, hd] rotary tables of each row's position
};

// Whether the caches, bias and slots fit a step of B rows with KV heads of width hd: the shapes
// above, every slot below the span, the span within the capacity.
bool decode_slots_fit(const DecodeSlots& s, int64_t B, int64_t KV, int64_t hd);

// Row b's new key and value, KV heads of hd floats each at k + b ld and v + b ld, into slot
// write[b] of its cache row [KV, capacity, hd].
void write_decode_slots(const DecodeSlots& s, const float* k, const float* v, int64_t ld, int64_t B, int64_t KV, int64_t hd);

// The attention of a step over the slots: query heads of row b at q + b ld (H heads of hd floats,
// H a multiple of KV), each row over slots [0, span) of its cache row.
DecodeHeads decode_heads(const DecodeSlots& s, const float* q, int64_t ld, int64_t B, int64_t H, int64_t KV, int64_t hd);

// A step's scratch rows, carved from one allocation that `storage` holds: part i has floats[i]
// floats, rounded up to whole 64-byte lines.
template <size_t P>
std::array<float*, P> carve_scratch(torch::Tensor& storage, std::array<int64_t, P> floats) {
  int64_t total = 0;
  for (auto& f : floats) total += f = (f + 15) / 16 * 16;
  storage = torch::empty({total}, torch::kFloat32);
  std::array<float*, P> parts{};
  float* p = storage.data_ptr<float>();
  for (size_t i = 0; i < P; ++i) parts[i] = p, p += floats[i];
  return parts;
}

}  // namespace keel
