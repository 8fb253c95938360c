// Attention of one new token per sequence over its cached keys and values: the attention of a
// decoding step. LibTorch's batched matmul would hand OpenBLAS one product per head, each of which
// repacks that head's cached keys or values on every step; here the scores are dot products read
// straight from the cache, normalised and summed over the values in place, a head's three passes
// together on one thread.
#pragma once

#include <torch/torch.h>

namespace keel {

// Whether decode_attention takes these inputs: CPU float32 outside autograd, one query position,
// unit stride along the head dimension of q, k and v, a [B, 1, 1, S] bias with unit stride along S.
bool decode_attention_applies(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& bias);

// softmax(q kᵀ / sqrt(hd) + bias) v for q [B, H, 1, hd], k and v [B, KV, S, hd] with H a multiple of KV
// (grouped-query attention: query head h reads kv head h / (H / KV)), bias [B, 1, 1, S] additive.
// Returns [B, H, 1, hd], equal to the plain computation to float32 rounding.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& bias);

// Where head (b, h) of a decoding step finds its query, keys, values and bias, in floats: the
// query at q + b q_b + h q_h, key s of kv head h / rep at k + b k_b + (h / rep) k_h + s k_s (v
// alike), bias[s] at bias + b bias_b; hd elements each with unit stride.
struct DecodeHeads {
  const float *q, *k, *v, *bias;
  int64_t q_b, q_h, k_b, k_h, k_s, v_b, v_h, v_s, bias_b;
  int64_t B, H, rep, S, hd;
  float scale;
};

// decode_attention on raw buffers, in one pass over the threads (scores, softmax and values of a
// head together): `scores` holds B H S floats of scratch, `out` receives [B, H, hd] contiguous.
void decode_attention_into(const DecodeHeads& a, float* scores, float* out);

}  // namespace keel
