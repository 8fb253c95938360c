// Linear layers of the transformer, in the two weight layouts checkpoints use.
//
// Decoding steps multiply a few rows (one token per sequence) by every weight matrix. OpenBLAS
// repacks the whole weight on each call, which at a handful of rows costs as much as the product
// itself; so products with at most kMaxTiledRows rows, float32 on the CPU, outside autograd, run
// kernels here that read the weight in place, split over the intra-op threads by output columns
// (W [K, N] narrow enough for a few rows: by fixed blocks of its rows, whose sums are added in
// order). The bits of a result do not depend on the number of threads. They are built for AVX-512
// and for AVX2 + FMA (core/kernel_isa.h picks one at start); other CPUs keep OpenBLAS. A single
// row (a decoding step at batch 1, bound by the stream of weights) with W [N, K], and up to
// kMaxSmallRows rows with bfloat16 copies, go one output at a time with vectors of at most 256
// bits in either build, so their bits are the same on AVX2 and AVX-512 CPUs; a single row with
// W [K, N] reads runs of 16 rows of W a pass, more rows runs of 4, in the same order of sums.
// Everything else goes to LibTorch unchanged. Results equal LibTorch's to float32 rounding (the
// summation order differs). The equal bits rest on GCC contracting each `acc += x * w` of the
// kernels into one fused multiply-add (GNU mode's -ffp-contract=fast).
#pragma once

#include <torch/torch.h>

#include <unordered_map>
#include <vector>

namespace keel {

// At most this many rows take the small-row kernels, which also read bfloat16 decoding copies
// (DecodeWeights); steps of more rows read the float32 weights.
inline constexpr int64_t kMaxSmallRows = 8;
// Up to this many rows (a decoding step of a larger batch) float32 products read W in place in
// register tiles of up to 4 rows (W [K, N], from 2 rows on unless it goes by blocks of rows) or row
// pairs (W [N, K]). Whole GPT-2-small decoding steps on 2 threads of an AVX-512 EPYC against
// OpenBLAS: 43-47 against 59-63 ms at 16 rows, 70-74 against 83-92 at 32 (bench/README.md).
// Longer inputs (prefills, training) keep OpenBLAS, whose packing their rows pay for.
inline constexpr int64_t kMaxTiledRows = 32;

// y[..., N] = x[..., K] · Wᵀ (+ bias), W stored [N, K] (torch::nn::Linear, the tied LM head).
torch::Tensor linear_nk(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

// y[..., N] = x[..., K] · W (+ bias), W stored [K, N] (GPT-2's Conv1D).
torch::Tensor linear_kn(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias = {});

// linear_kn into a buffer the caller owns (a fused decoding block): x [M, K] with row stride
// ldx >= K, 1 to kMaxSmallRows rows, y [M, N] contiguous and apart from x; weight [K, N] and bias
// [N] (or undefined) contiguous float32 on the CPU. Runs keel's kernels: linear_kn's result bit
// for bit where linear_kn takes them too (uses_small_kernel).
void linear_kn_into(const float* x, int64_t M, int64_t ldx, const torch::Tensor& weight, const torch::Tensor& bias, float* y);

// x · weight (+ bias) as a device without keel's kernels (CUDA) computes it with `weight`'s
// decoding copy in scope: the device's own bfloat16 product (x rounded to bfloat16, sums in
// float32, the result rounded to bfloat16 and widened back) and the bias added in float32. Every
// row count (a prefill too). Undefined where no copy of `weight` on x's device is in scope, x is not
// float32, or autograd follows x or weight. linear_nk and linear_kn take it for non-CPU inputs.
torch::Tensor decoding_copy_product(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// Whether x · weight (+ bias) takes the in-place kernels rather than LibTorch (for tests and benchmarks).
bool uses_small_kernel(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);
// Whether it takes them with more than kMaxSmallRows rows (and at most kMaxTiledRows): float32 W.
bool uses_tiled_kernel(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// bfloat16 copies of weight matrices for decoding, which is bound by the bytes of weights each
// step reads: with a copy in scope (DecodeWeightsScope) the small-row kernels read it instead of
// the float32 weight, widening each element to float32 in registers, so products still
// accumulate in float32 (the result equals the float32 product with the weight rounded to
// bfloat16, up to summation order). On the CPU, products with more rows (a prompt's prefill) and
// autograd keep the float32 weights; on a CUDA device every product without autograd takes the
// device's bfloat16 product instead (decoding_copy_product), which rounds x and the result too.
// Copies are taken by refresh(), after every change of the weights. Copies of [K, N] weights are
// kept transposed to [N, K]: the dot products along K widen a whole vector of halves per multiply,
// where the row panels of [K, N] ran compute-bound on the widening (GPT-2 small on AVX2: no faster
// than float32).
class DecodeWeights {
 public:
  // Float32 matrices stored [N, K] (`nk`: torch::nn::Linear, the tied head) and [K, N] (`kn`:
  // GPT-2's Conv1D), each copied on its own device; replaces every copy.
  void refresh(const std::vector<torch::Tensor>& nk, const std::vector<torch::Tensor>& kn = {});
  // The copy of `weight` ([N, K] whichever layout `weight` has), or undefined.
  torch::Tensor find(const torch::Tensor& weight) const;
  int64_t bytes() const;

 private:
  struct Copy {
    torch::Tensor weight;  // held so that its address is not reused while it keys the map
    torch::Tensor copy;
  };
  std::unordered_map<const void*, Copy> copies_;
};

// Makes `weights` (may be null) the copies small-row products on this thread read, until destroyed.
class DecodeWeightsScope {
 public:
  explicit DecodeWeightsScope(const DecodeWeights* weights);
  ~DecodeWeightsScope();
  DecodeWeightsScope(const DecodeWeightsScope&) = delete;
  DecodeWeightsScope& operator=(const DecodeWeightsScope&) = delete;

 private:
  const DecodeWeights* previous_;
};

}  // namespace keel
