#include "learner/lm_batch.h"

namespace keel {

LossResult lm_loss(Transformer& model, const LmBatch& b) {
  auto h = model->hidden(b.inputs);
  return {summed_cross_entropy(model->logits(h), b.targets), {}};
}

}  // namespace keel
