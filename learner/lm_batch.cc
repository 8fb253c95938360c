#include "learner/lm_batch.h"

namespace keel {

LossResult lm_loss(Transformer& model, const LmBatch& b) {
  auto h = model->hidden(b.inputs);
  return {model->summed_cross_entropy_of(h, b.targets), {}};
}

}  // namespace keel
