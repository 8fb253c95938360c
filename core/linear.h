// Linear layers of the transformer, in the two weight layouts checkpoints use.
//
// Decoding steps multiply a few rows (one token per sequence) by every weight matrix. OpenBLAS
// repacks the whole weight on each call, which at a handful of rows costs as much as the product
// itself; so products with at most kMaxSmallRows rows, float32 on the CPU, outside autograd, run
// kernels here that read the weight in place, split over the intra-op threads by output columns.
// They are built for AVX-512 and for AVX2 + FMA (core/kernel_isa.h picks one at start); other CPUs
// keep OpenBLAS. Everything else goes to LibTorch unchanged. Results equal LibTorch's to float32
// rounding (the summation order differs).
#pragma once

#include <torch/torch.h>

namespace keel {

inline constexpr int64_t kMaxSmallRows = 64;

// y[..., N] = x[..., K] · Wᵀ (+ bias), W stored [N, K] (torch::nn::Linear, the tied LM head).
torch::Tensor linear_nk(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

// y[..., N] = x[..., K] · W (+ bias), W stored [K, N] (GPT-2's Conv1D).
torch::Tensor linear_kn(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

// Whether x · weight (+ bias) takes the in-place kernels rather than LibTorch (for tests and benchmarks).
bool uses_small_kernel(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace keel
