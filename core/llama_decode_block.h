// One Llama block's decoding step on raw buffers: at most kMaxSmallRows rows (core/linear.h), one
// new token each. The block's formula (RMSNorm, q/k/v products, rotary embedding, the new key and
// value written to the row's cache slot, attention over the row's slots, o product and residual,
// RMSNorm, gate/up products, SiLU gate, down product and residual) without LibTorch's dispatch
// between the products: a step is bound by reading the weights, and each of the ~27 ops a layer
// LibTorch would dispatch between them leaves the memory idle for microseconds.
// Results equal the block's LibTorch ops to float32 rounding; products read the decoding copies in
// scope (DecodeWeightsScope) as linear_nk does.
#pragma once

#include <torch/torch.h>

#include "core/decode_slots.h"

namespace keel {

// A Llama block's parameters: norms [d]; q [H hd, d], k and v [KV hd, d], o [d, H hd], gate and
// up [ff, d], down [d, ff], all float32 as torch::nn::Linear stores them.
struct LlamaBlockWeights {
  torch::Tensor input_norm, post_norm;
  torch::Tensor q, k, v, o, gate, up, down;
  double eps = 1e-5;
  int64_t heads = 0, kv_heads = 0;
};

// Whether llama_decode_block takes x [B, 1, d] with these weights and slots: CPU float32
// contiguous tensors outside autograd, of the shapes above and in DecodeSlots (rotary tables
// included), B at most kMaxSmallRows, products that take the small-row kernels (uses_small_kernel).
bool llama_decode_block_applies(const torch::Tensor& x, const LlamaBlockWeights& w, const DecodeSlots& s);

// The block's output [B, 1, d] for input x [B, 1, d]; writes each row's new key and value into
// the cache. Only where llama_decode_block_applies holds (throws KeelError otherwise).
torch::Tensor llama_decode_block(const torch::Tensor& x, const LlamaBlockWeights& w, const DecodeSlots& s);

// How many blocks llama_decode_block has computed in this process (tests and benchmarks check
// that a model's decoding steps take it).
int64_t llama_decode_blocks_run();

}  // namespace keel
