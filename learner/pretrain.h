// Pretraining objective: packed next-token prediction over a token file. Each micro-batch row
// is a window of seq_len + 1 tokens at an offset drawn from (seed, step, micro); documents are
// separated by EOS inside the stream, as GPT-2 trains.
#pragma once

#include <memory>
#include <string>

#include "core/token_file.h"
#include "learner/objective.h"

namespace keel {

struct PretrainOptions {
  std::string data_dir;  // holds train.bin and val.bin (keel data tokenize)
  int64_t seq_len = 256;
  int64_t batch_size = 8;     // rows per micro-batch
  int64_t eval_batches = 16;  // held-out windows evaluated = eval_batches * batch_size
  uint64_t seed = 1;
  void validate() const;
};

class PretrainObjective : public Objective {
 public:
  PretrainObjective(PretrainOptions options, torch::Device device);
  std::unique_ptr<MicroBatch> batch(int64_t step, int64_t micro) override;
  LossResult loss(Transformer& model, const MicroBatch& batch) override;
  Scalars evaluate(Transformer& model) override;
  const TokenFile& train() const { return *train_; }

 private:
  PretrainOptions o_;
  torch::Device device_;
  std::unique_ptr<TokenFile> train_, val_;
};

}  // namespace keel
