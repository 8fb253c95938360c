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

}  // namespace keel
