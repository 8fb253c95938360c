// SFT objective: next-token loss on response tokens only. With packing, several examples share
// a row without attending to each other (segment ids; positions restart per example);
// without packing, one right-padded example per row. Example order is a per-epoch permutation
// from the seed, so step s always sees the same rows.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/sft_data.h"
#include "learner/objective.h"

namespace keel {

struct SftOptions {
  int64_t seq_len = 256;   // row length; longer examples are truncated (counted, reported)
  int64_t batch_size = 8;  // rows per micro-batch
  bool packing = true;
  int64_t grad_accum = 1;  // micro-batches per step, as in TrainOptions (rows are consumed in order)
  uint64_t seed = 1;
  void validate() const;
};

class SftObjective : public Objective {
 public:
  SftObjective(SftOptions options, std::vector<SftExample> train, std::vector<SftExample> eval, torch::Device device);
  std::unique_ptr<MicroBatch> batch(int64_t step, int64_t micro) override;
  LossResult loss(Transformer& model, const MicroBatch& batch) override;
  Scalars evaluate(Transformer& model) override;
  int64_t truncated() const { return truncated_; }

 private:
  using Row = std::vector<int64_t>;                   // example indices packed into one row
  const Row& row(int64_t index);                      // global row index across epochs
  const std::vector<Row>& epoch_rows(int64_t epoch);  // packs epoch `epoch` (a seeded permutation) once
  std::unique_ptr<MicroBatch> make_batch(const std::vector<Row>& rows, const std::vector<SftExample>& pool) const;

  SftOptions o_;
  std::vector<SftExample> train_, eval_;
  torch::Device device_;
  int64_t truncated_ = 0;
  std::map<int64_t, std::vector<Row>> epochs_;  // epoch -> rows, built on demand
  std::vector<int64_t> epoch_start_;            // first global row of each built epoch
};

}  // namespace keel
