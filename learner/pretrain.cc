#include "learner/pretrain.h"

#include <cmath>
#include <random>

#include "core/error.h"
#include "learner/lm_batch.h"

namespace keel {

void PretrainOptions::validate() const {
  KEEL_CHECK(!data_dir.empty(), "pretrain needs --data (a directory with train.bin and val.bin)");
  KEEL_CHECK(seq_len > 0 && batch_size > 0, "seq-len and batch-size must be positive");
}

PretrainObjective::PretrainObjective(PretrainOptions options, torch::Device device) : o_(std::move(options)), device_(device) {
  o_.validate();
  train_ = std::make_unique<TokenFile>(o_.data_dir + "/train.bin");
  val_ = std::make_unique<TokenFile>(o_.data_dir + "/val.bin");
  KEEL_CHECK(train_->size() > o_.seq_len + 1,
             o_.data_dir << "/train.bin has " << train_->size() << " tokens, fewer than one window of " << o_.seq_len + 1);
  KEEL_CHECK(val_->size() > o_.seq_len + 1,
             o_.data_dir << "/val.bin has " << val_->size() << " tokens, fewer than one window of " << o_.seq_len + 1);
}

namespace {
std::unique_ptr<LmBatch> windows(const TokenFile& f, const std::vector<int64_t>& offsets, int64_t T, torch::Device dev) {
  const int64_t B = static_cast<int64_t>(offsets.size());
  auto buf = torch::empty({B, T + 1}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) f.read(offsets[static_cast<size_t>(b)], T + 1, buf[b].data_ptr<int64_t>());
  auto out = std::make_unique<LmBatch>();
  out->inputs.tokens = buf.narrow(1, 0, T).contiguous().to(dev);
  out->targets = buf.narrow(1, 1, T).contiguous().to(dev);
  out->units = B * T;
  out->tokens = B * T;
  return out;
}
}  // namespace

std::unique_ptr<MicroBatch> PretrainObjective::batch(int64_t step, int64_t micro) {
  std::seed_seq seq{o_.seed, static_cast<uint64_t>(step), static_cast<uint64_t>(micro)};
  std::mt19937_64 rng(seq);
  std::uniform_int_distribution<int64_t> pick(0, train_->size() - o_.seq_len - 1);
  std::vector<int64_t> offsets(static_cast<size_t>(o_.batch_size));
  for (auto& x : offsets) x = pick(rng);
  return windows(*train_, offsets, o_.seq_len, device_);
}

LossResult PretrainObjective::loss(Transformer& model, const MicroBatch& batch) {
  return lm_loss(model, static_cast<const LmBatch&>(batch));
}

Scalars PretrainObjective::evaluate(Transformer& model) {
  // Evenly spaced, fixed windows over the held-out file: the same set at every evaluation.
  const int64_t n = o_.eval_batches * o_.batch_size;
  const int64_t span = val_->size() - o_.seq_len - 1;
  double nll = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < n; i += o_.batch_size) {
    std::vector<int64_t> offsets;
    for (int64_t b = i; b < std::min(n, i + o_.batch_size); ++b) offsets.push_back(span * b / std::max<int64_t>(1, n));
    auto w = windows(*val_, offsets, o_.seq_len, device_);
    nll += lm_loss(model, *w).sum.item<double>();
    count += w->units;
  }
  const double loss = nll / static_cast<double>(count);
  return {{"eval/loss", loss}, {"eval/perplexity", std::exp(loss)}};
}

}  // namespace keel
