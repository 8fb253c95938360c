// The normalisations and rotary embedding of a decoding step, each in one pass over its rows. A step at
// batch 1 moves a few kilobytes through each of them, so LibTorch's chain of ops for the same
// formula (RMSNorm: 7 ops, rotary: 7 for each of q and k, each allocating its result) costs more
// in dispatch than in arithmetic, 30 layers a step.
// They take what the small-row products take (core/linear.h): at most kMaxSmallRows rows of CPU
// float32 tensors outside autograd (decode_ops_apply), so a prefill or a learner's batch runs the
// plain ops as training does. Results equal the plain ops' to float32 rounding.
#pragma once

#include <torch/torch.h>

namespace keel {

// Whether a step of `rows` rows (tokens) takes these ops: at most kMaxSmallRows, and every
// tensor a contiguous CPU float32 one that autograd does not need to follow.
bool decode_ops_apply(int64_t rows, std::initializer_list<torch::Tensor> tensors);

// weight * x / sqrt(mean(x², last dim) + eps) for contiguous x [..., d], weight [d].
torch::Tensor rms_norm_rows(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// In place: x = x * cos + rotate_half(x) * sin, for x [B, T, heads, hd] contiguous (the
// projection's output before its transpose to [B, heads, T, hd]) and cos, sin [B, 1, T, hd]
// contiguous, where rotate_half(x) = cat(-x[hd/2:], x[:hd/2]). Returns x.
torch::Tensor rotary_rows_(torch::Tensor x, const torch::Tensor& cos, const torch::Tensor& sin);

// The same on raw buffers (the fused decoding blocks, core/llama_decode_block.h and
// core/gpt2_decode_block.h, which check their own inputs): y [rows, d] =
// rms_norm(x [rows, d]) * weight [d]; x [rows, heads, hd] rotated in place by row r's cos, sin
// [rows, hd] (hd even).
void rms_norm_into(const float* x, int64_t rows, int64_t d, const float* weight, double eps, float* y);
// GPT-2's: y [rows, d] = (x - mean) / sqrt(var + eps) * weight + bias, the variance biased (as
// torch::nn::LayerNorm's).
void layer_norm_into(const float* x, int64_t rows, int64_t d, const float* weight, const float* bias, double eps, float* y);
void rotary_into(float* x, int64_t rows, int64_t heads, int64_t hd, const float* cos, const float* sin);

}  // namespace keel
