// Activation checkpointing: a piece of a forward pass that keeps only its input. The piece runs
// without recording its intermediate results; the backward pass runs it again from the saved
// input, with autograd on, and back-propagates through that recomputation. A step's peak memory
// then holds one piece's activations at a time instead of all of them, for one more forward pass
// of the checkpointed pieces.
//
// Reentrant, like PyTorch's checkpoint(use_reentrant=True): the parameters the piece uses receive
// their gradients (into .grad, through their hooks) during the recomputation's own backward. So:
// the piece must be deterministic (keel's models have no dropout), a gradient reaches its
// parameters only through loss.backward() (not torch::autograd::grad), and `x` must require
// grad (else run the piece plainly: the checkpoint would have no gradient to hand back).
#pragma once

#include <torch/torch.h>

#include <functional>

namespace keel {

// f(x) with f's activations recomputed during backward. The closure is kept until then, so it
// must hold by value whatever else it reads (not references to the caller's stack).
torch::Tensor checkpointed(std::function<torch::Tensor(const torch::Tensor&)> f, const torch::Tensor& x);

}  // namespace keel
