// One GPT-2 block's decoding step on raw buffers: at most kMaxSmallRows rows (core/linear.h), one
// new token each. The block's formula (LayerNorm, the q/k/v product, the new key and value written
// to the row's cache slot, attention over the row's slots, the output product and residual,
// LayerNorm, the MLP's products around a tanh GELU, residual) with one LibTorch op (the GELU)
// instead of ~20 a layer: a step is bound by reading the weights, and the main thread's dispatch
// between products leaves the memory idle (GPT-2 small's bfloat16 step at batch 1 on 2 threads of
// an AVX-512 EPYC spent 13% of its main thread's time outside the products and attention).
// Results equal the block's LibTorch ops to float32 rounding; products read the decoding copies in
// scope (DecodeWeightsScope) as linear_kn does.
#pragma once

#include <torch/torch.h>

#include "core/decode_slots.h"

namespace keel {

// A GPT-2 block's parameters, float32 as its modules store them: LayerNorms' weight and bias [d];
// Conv1D weights [in, out] with biases [out]: attn [d, 3d] (q, k, v side by side), attn_proj
// [d, d], fc [d, ff], mlp_proj [ff, d].
struct Gpt2BlockWeights {
  torch::Tensor ln_1_weight, ln_1_bias, ln_2_weight, ln_2_bias;
  torch::Tensor attn, attn_bias, attn_proj, attn_proj_bias, fc, fc_bias, mlp_proj, mlp_proj_bias;
  double eps = 1e-5;
  int64_t heads = 0;
};

// Whether gpt2_decode_block takes x [B, 1, d] with these weights and slots (a cache of `heads`
// heads): CPU float32 contiguous tensors of the shapes above outside autograd, B at most
// kMaxSmallRows, products that take the small-row kernels (uses_small_kernel).
bool gpt2_decode_block_applies(const torch::Tensor& x, const Gpt2BlockWeights& w, const DecodeSlots& s);

// The block's output [B, 1, d] for input x [B, 1, d]; writes each row's new key and value into
// the cache. Only where gpt2_decode_block_applies holds (throws KeelError otherwise).
torch::Tensor gpt2_decode_block(const torch::Tensor& x, const Gpt2BlockWeights& w, const DecodeSlots& s);

// How many blocks gpt2_decode_block has computed in this process (tests check that a model's
// decoding steps take it).
int64_t gpt2_decode_blocks_run();

}  // namespace keel
