// The micro-batch of language-model objectives (pretrain, SFT): inputs and shifted targets.
#pragma once

#include "core/transformer.h"
#include "learner/objective.h"

namespace keel {

struct LmBatch : MicroBatch {
  ForwardInputs inputs;   // tokens [B, T] (+ positions/segments/key mask when packed or padded)
  torch::Tensor targets;  // [B, T] next token ids, -100 where no loss is taken
};

// Summed next-token cross-entropy over targets != -100.
LossResult lm_loss(Transformer& model, const LmBatch& batch);

}  // namespace keel
