// Several products with one input in one pass over the threads: a decoding step's q, k and v
// projections, or its gate and up projections, read their weights in one parallel region
// instead of one each (core/linear.h's small-row kernels; a dispatch of a parallel region costs
// microseconds, and a step of a 30-layer model has 210 products).
#pragma once

#include <torch/torch.h>

#include <vector>

namespace keel {

// linear_nk(x, w) for every w of `weights` (each [N_i, K], no bias), equal to it to float32
// rounding. One pass when every product takes the small-row kernels and every weight, or none,
// has a decoding copy in scope (DecodeWeightsScope); otherwise one linear_nk each.
std::vector<torch::Tensor> linear_nk_group(const torch::Tensor& x, const std::vector<torch::Tensor>& weights);

// Whether every product of x with `weights` takes the small-row kernels (uses_small_kernel);
// throws KeelError when a weight's width is not x's.
bool linear_nk_group_applies(const torch::Tensor& x, const std::vector<torch::Tensor>& weights);

// linear_nk_group into buffers the caller owns (a fused decoding block): x [M, K] with row
// stride ldx, ys[i] [M, N_i] contiguous. Only where linear_nk_group_applies holds.
void linear_nk_group_into(const float* x, int64_t M, int64_t ldx, int64_t K, const std::vector<torch::Tensor>& weights,
                          const std::vector<float*>& ys);

}  // namespace keel
