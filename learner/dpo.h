// The DPO learner's objective on the shared training loop: batches of preference pairs from a
// PairSource (a shuffled buffer stream offline, the freshest pairs online), the DPO-family loss of
// algos/dpo_loss.h on summed response log-probs, with reference log-probs read from the buffer's
// cache when every pair of a batch has them and computed by the frozen reference model otherwise.
// Optional RPO term (Pang et al. 2024): sft_weight * mean token NLL of the chosen response.
// Metrics (per pair): rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies,
// logps/chosen, logps/rejected; held-out: eval/loss, eval/accuracy, eval/margin.
#pragma once

#include <optional>
#include <vector>

#include "learner/algos/dpo_loss.h"
#include "learner/pair_batch.h"

namespace keel {

struct DpoOptions {
  DpoConfig loss;
  int64_t max_len = 256;    // prompt + response tokens per row
  int64_t batch_pairs = 8;  // pairs per held-out evaluation batch
  double sft_weight = 0.0;  // RPO weight; 0 = off
  int64_t grad_accum = 1;
};

class DpoObjective : public Objective {
 public:
  // `reference` may be empty when every pair carries cached reference log-probs or for simpo.
  DpoObjective(DpoOptions options, PairSource train, std::vector<PreferencePair> eval, std::optional<Transformer> reference,
               int64_t pad_id, int64_t vocab, torch::Device device);
  std::unique_ptr<MicroBatch> batch(int64_t step, int64_t micro) override;
  LossResult loss(Transformer& model, const MicroBatch& batch) override;
  Scalars evaluate(Transformer& model) override;

 private:
  torch::Tensor reference_logprobs(const PairBatch& b);

  DpoOptions o_;
  PairSource train_;
  std::vector<PreferencePair> eval_;
  std::optional<Transformer> reference_;
  int64_t pad_id_, vocab_;
  torch::Device device_;
};

// Summed reference log-probs (chosen, rejected) of `pairs` under `model`, `batch_pairs` at a time,
// with the truncation of make_pair_batch: what `keel dpo --precompute-ref` caches.
std::pair<std::vector<float>, std::vector<float>> compute_reference_logprobs(Transformer& model,
                                                                             const std::vector<PreferencePair>& pairs,
                                                                             int64_t max_len, int64_t batch_pairs);

}  // namespace keel
