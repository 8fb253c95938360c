#include "learner/sft.h"

#include <algorithm>
#include <random>

#include "core/error.h"
#include "learner/lm_batch.h"

namespace keel {

void SftOptions::validate() const { KEEL_CHECK(seq_len > 1 && batch_size > 0, "seq-len must be > 1 and batch-size > 0"); }

SftObjective::SftObjective(SftOptions options, std::vector<SftExample> train, std::vector<SftExample> eval, torch::Device device)
    : o_(options), train_(std::move(train)), eval_(std::move(eval)), device_(device) {
  o_.validate();
  KEEL_CHECK(!train_.empty(), "SFT has no training examples");
  for (auto* pool : {&train_, &eval_}) {
    for (auto& ex : *pool) {
      const int64_t len = static_cast<int64_t>(ex.prompt.size() + ex.response.size());
      if (len <= o_.seq_len) continue;
      ++truncated_;
      if (static_cast<int64_t>(ex.prompt.size()) >= o_.seq_len) ex.prompt.resize(static_cast<size_t>(o_.seq_len - 1));
      ex.response.resize(static_cast<size_t>(o_.seq_len) - ex.prompt.size());
    }
  }
}

const std::vector<SftObjective::Row>& SftObjective::epoch_rows(int64_t epoch) {
  auto it = epochs_.find(epoch);
  if (it != epochs_.end()) return it->second;
  std::vector<int64_t> order(train_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::mt19937_64 rng(o_.seed * 7919ull + static_cast<uint64_t>(epoch));
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<Row> rows;
  Row cur;
  int64_t used = 0;
  for (int64_t i : order) {
    const auto len = static_cast<int64_t>(train_[i].prompt.size() + train_[i].response.size());
    if (!cur.empty() && (!o_.packing || used + len > o_.seq_len)) {
      rows.push_back(cur);
      cur.clear();
      used = 0;
    }
    cur.push_back(i);
    used += len;
  }
  if (!cur.empty()) rows.push_back(cur);
  if (static_cast<int64_t>(epoch_start_.size()) == epoch + 1)
    epoch_start_.push_back(epoch_start_[epoch] + static_cast<int64_t>(rows.size()));
  // Keep the current and previous epoch; older ones are rebuilt on demand (a resume, say).
  while (!epochs_.empty() && epochs_.begin()->first < epoch - 1) epochs_.erase(epochs_.begin());
  return epochs_.emplace(epoch, std::move(rows)).first->second;
}

const SftObjective::Row& SftObjective::row(int64_t index) {
  if (epoch_start_.empty()) epoch_start_.push_back(0);
  // Start at the last epoch known to begin at or before `index`; build later epochs as needed.
  int64_t epoch = (std::upper_bound(epoch_start_.begin(), epoch_start_.end(), index) - epoch_start_.begin()) - 1;
  while (true) {
    const auto& rows = epoch_rows(epoch);
    if (index < epoch_start_[epoch + 1]) return rows[static_cast<size_t>(index - epoch_start_[epoch])];
    ++epoch;
  }
}

std::unique_ptr<MicroBatch> SftObjective::make_batch(const std::vector<Row>& rows, const std::vector<SftExample>& pool) const {
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t T = 0;
  for (const auto& r : rows) {
    int64_t len = 0;
    for (int64_t i : r) len += static_cast<int64_t>(pool[i].prompt.size() + pool[i].response.size());
    T = std::max(T, len);
  }
  auto tokens = torch::zeros({B, T}, torch::kLong);
  auto targets = torch::full({B, T}, -100, torch::kLong);
  auto positions = torch::zeros({B, T}, torch::kLong);
  auto segments = torch::zeros({B, T}, torch::kLong);
  auto mask = torch::zeros({B, T}, torch::kBool);
  auto tk = tokens.accessor<int64_t, 2>();
  auto tg = targets.accessor<int64_t, 2>();
  auto ps = positions.accessor<int64_t, 2>();
  auto sg = segments.accessor<int64_t, 2>();
  auto mk = mask.accessor<bool, 2>();
  auto out = std::make_unique<LmBatch>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t at = 0, seg = 1;
    for (int64_t i : rows[static_cast<size_t>(b)]) {
      const auto& ex = pool[static_cast<size_t>(i)];
      std::vector<int32_t> seq(ex.prompt);
      seq.insert(seq.end(), ex.response.begin(), ex.response.end());
      const int64_t plen = static_cast<int64_t>(ex.prompt.size());
      for (int64_t t = 0; t < static_cast<int64_t>(seq.size()); ++t) {
        tk[b][at + t] = seq[static_cast<size_t>(t)];
        ps[b][at + t] = t;
        sg[b][at + t] = seg;
        mk[b][at + t] = true;
        // Position t predicts token t+1; the loss is taken where that token is in the response.
        if (t + 1 < static_cast<int64_t>(seq.size()) && t + 1 >= plen) {
          tg[b][at + t] = seq[static_cast<size_t>(t + 1)];
          out->units += 1;
        }
      }
      at += static_cast<int64_t>(seq.size());
      ++seg;
    }
    out->tokens += at;
  }
  out->inputs.tokens = tokens.to(device_);
  out->inputs.positions = positions.to(device_);
  out->inputs.key_mask = mask.to(device_);
  if (o_.packing) out->inputs.segments = segments.to(device_);
  out->targets = targets.to(device_);
  return out;
}

std::unique_ptr<MicroBatch> SftObjective::batch(int64_t step, int64_t micro) {
  // Rows are consumed in order: micro-batch (step, micro) takes the next batch_size rows.
  const int64_t first = (step * o_.grad_accum + micro) * o_.batch_size;
  std::vector<Row> rows;
  for (int64_t b = 0; b < o_.batch_size; ++b) rows.push_back(row(first + b));
  return make_batch(rows, train_);
}

LossResult SftObjective::loss(Transformer& model, const MicroBatch& batch) {
  return lm_loss(model, static_cast<const LmBatch&>(batch));
}

Scalars SftObjective::evaluate(Transformer& model) {
  if (eval_.empty()) return {};
  double nll = 0;
  int64_t units = 0;
  for (size_t i = 0; i < eval_.size(); i += static_cast<size_t>(o_.batch_size)) {
    std::vector<Row> rows;
    for (size_t j = i; j < std::min(eval_.size(), i + static_cast<size_t>(o_.batch_size)); ++j)
      rows.push_back({static_cast<int64_t>(j)});
    auto b = make_batch(rows, eval_);
    nll += lm_loss(model, static_cast<const LmBatch&>(*b)).sum.item<double>();
    units += b->units;
  }
  return {{"eval/loss", nll / static_cast<double>(std::max<int64_t>(1, units))}};
}

}  // namespace keel
