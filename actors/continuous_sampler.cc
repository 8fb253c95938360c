#include "actors/continuous_sampler.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <deque>

#include "core/error.h"

namespace keel {

namespace {

// Prefilled prompts: their keys and values (a shared-layout cache, left padded) and the logits
// of each prompt's last token, the distribution of its responses' first token.
struct Prefill {
  size_t first_run = 0, runs = 0;  // prompt runs first_run .. first_run + runs - 1, one row each
  KVCache cache;
  torch::Tensor last_logits;  // [runs, V] float32, CPU
  std::vector<int64_t> from;  // each row's first real slot (left padding before it)
};

class ContinuousBatch {
 public:
  ContinuousBatch(Transformer& model, const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& cfg, int32_t eos,
                  int32_t pad, const std::vector<int64_t>& limits);
  Samples run();

 private:
  void admit();  // free rows take the next prompts, and draw their first tokens
  const Prefill& prefill_for(size_t run, size_t runs_wanted);
  void record(size_t row, int64_t token, float logp);  // frees the row when its response ends
  void step();                                         // one decoding step of the busy rows
  void drop_idle_rows();  // once no prompt is left: rows without a response stop being computed

  Transformer& model_;
  const std::vector<std::vector<int32_t>>& prompts_;
  const SamplingConfig& cfg_;
  const int32_t eos_, pad_;
  const std::vector<int64_t>& limits_;
  std::vector<size_t> run_of_;  // prompt -> its run (maximal stretch of identical prompts)
  std::vector<size_t> run_first_;
  std::deque<Prefill> prefills_;
  KVCache cache_;
  at::Generator gen_;
  std::vector<int64_t> row_prompt_;           // -1: free
  std::vector<int64_t> row_token_, row_pos_;  // the token to feed next, and its position
  size_t next_prompt_ = 0;
  Samples out_;
};

ContinuousBatch::ContinuousBatch(Transformer& model, const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& cfg,
                                 int32_t eos, int32_t pad, const std::vector<int64_t>& limits)
    : model_(model), prompts_(prompts), cfg_(cfg), eos_(eos), pad_(pad >= 0 ? pad : 0), limits_(limits),
      gen_(at::detail::createCPUGenerator(cfg.seed)) {
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    KEEL_CHECK(!prompts[i].empty(), "empty prompt " << i << ": every prompt needs at least one token (e.g. BOS)");
    if (i == 0 || prompts[i] != prompts[i - 1]) run_first_.push_back(i);
    run_of_.push_back(run_first_.size() - 1);
    longest = std::max(longest, prompts[i].size());
  }
  const auto rows = static_cast<int64_t>(std::min(prompts.size(), static_cast<size_t>(cfg.slots)));
  cache_ = model->make_cache(rows, static_cast<int64_t>(longest) + cfg.max_new_tokens, /*per_row=*/true);
  row_prompt_.assign(static_cast<size_t>(rows), -1);
  row_token_.assign(static_cast<size_t>(rows), pad_);
  row_pos_.assign(static_cast<size_t>(rows), 0);
  out_.responses.resize(prompts.size());
  out_.logprobs.resize(prompts.size());
  out_.finished.assign(prompts.size(), false);
}

// The prefill holding `run`, made on demand for `runs_wanted` runs from it (the runs the free
// rows are about to take): one left-padded forward pass for all of them.
const Prefill& ContinuousBatch::prefill_for(size_t run, size_t runs_wanted) {
  while (!prefills_.empty() && prefills_.front().first_run + prefills_.front().runs <= run)
    prefills_.pop_front();  // runs before `run`: every prompt of theirs has had a row (rows take prompts in order)
  for (const auto& p : prefills_)
    if (run >= p.first_run && run < p.first_run + p.runs) return p;
  Prefill p;
  p.first_run = run;
  p.runs = std::min(runs_wanted, run_first_.size() - run);
  std::vector<std::vector<int32_t>> batch;
  for (size_t r = run; r < run + p.runs; ++r) batch.push_back(prompts_[run_first_[r]]);
  auto padded = left_pad(batch, pad_);
  const auto dev = model_->device();
  const int64_t L = padded.tokens.size(1);
  p.cache = model_->make_cache(static_cast<int64_t>(p.runs), L);
  auto h = model_->hidden({padded.tokens.to(dev), padded.positions.to(dev), padded.key_mask.to(dev), {}}, &p.cache);
  p.last_logits = model_->logits(h.select(1, L - 1)).to(torch::kCPU, torch::kFloat32);
  for (const auto& b : batch) p.from.push_back(L - static_cast<int64_t>(b.size()));
  out_.prefill_rows += static_cast<int64_t>(p.runs);
  prefills_.push_back(std::move(p));
  return prefills_.back();
}

void ContinuousBatch::admit() {
  std::vector<size_t> free_rows;
  for (size_t r = 0; r < row_prompt_.size(); ++r)
    if (row_prompt_[r] < 0) free_rows.push_back(r);
  while (!free_rows.empty() && next_prompt_ < prompts_.size()) {
    // Runs the free rows will take now: prefilled together when not prefilled yet.
    const size_t last = std::min(prompts_.size(), next_prompt_ + free_rows.size()) - 1;
    std::vector<size_t> rows;
    std::vector<torch::Tensor> first_logits;
    for (size_t row : free_rows) {
      if (next_prompt_ >= prompts_.size()) break;
      const size_t i = next_prompt_++, run = run_of_[i];
      const auto& p = prefill_for(run, run_of_[last] - run + 1);
      const auto n = static_cast<int64_t>(prompts_[i].size());
      cache_take_prefix(cache_, static_cast<int64_t>(row), p.cache, static_cast<int64_t>(run - p.first_run),
                        p.from[run - p.first_run], n);
      first_logits.push_back(p.last_logits[static_cast<int64_t>(run - p.first_run)]);
      row_prompt_[row] = static_cast<int64_t>(i);
      row_pos_[row] = n;
      rows.push_back(row);
    }
    auto [next, logp] = choose_tokens(torch::stack(first_logits), cfg_, gen_);
    free_rows.clear();
    for (size_t j = 0; j < rows.size(); ++j) {
      record(rows[j], next[static_cast<int64_t>(j)].item<int64_t>(), logp[static_cast<int64_t>(j)].item<float>());
      if (row_prompt_[rows[j]] < 0) free_rows.push_back(rows[j]);  // ended at its first token
    }
  }
}

void ContinuousBatch::record(size_t row, int64_t token, float logp) {
  const auto i = static_cast<size_t>(row_prompt_[row]);
  out_.responses[i].push_back(static_cast<int32_t>(token));
  out_.logprobs[i].push_back(logp);
  if (cfg_.stop_at_eos && token == eos_) out_.finished[i] = true;
  if (out_.finished[i] || static_cast<int64_t>(out_.responses[i].size()) >= limits_[i]) {
    row_prompt_[row] = -1;
  } else {
    row_token_[row] = token;
  }
}

void ContinuousBatch::step() {
  const auto rows = static_cast<int64_t>(row_prompt_.size());
  std::vector<int64_t> busy;
  for (int64_t r = 0; r < rows; ++r) {
    const auto ru = static_cast<size_t>(r);
    if (row_prompt_[ru] >= 0) {
      busy.push_back(r);
    } else {  // idle (no prompt left): a padding token in its slot 0; its output is not read
      row_token_[ru] = pad_;
      row_pos_[ru] = 0;
      cache_.row_length[ru] = 0;
    }
  }
  const auto dev = model_->device();
  auto tokens = torch::tensor(row_token_, torch::kLong).view({rows, 1}).to(dev);
  auto positions = torch::tensor(row_pos_, torch::kLong).view({rows, 1}).to(dev);
  auto h = model_->hidden({tokens, positions, {}, {}}, &cache_);
  ++out_.steps;
  auto idx = torch::tensor(busy, torch::kLong);
  auto logits = model_->logits(h.select(1, 0).index_select(0, idx.to(dev))).to(torch::kCPU, torch::kFloat32);
  auto [next, logp] = choose_tokens(logits, cfg_, gen_);
  auto nx = next.accessor<int64_t, 1>();
  auto lp = logp.accessor<float, 1>();
  for (size_t j = 0; j < busy.size(); ++j) {
    const auto r = static_cast<size_t>(busy[j]);
    ++row_pos_[r];
    record(r, nx[static_cast<int64_t>(j)], lp[static_cast<int64_t>(j)]);
  }
}

// At the end of the work the rows empty one by one; a step costs about as much per row as per
// busy row, so when half of them idle the cache keeps only the busy ones (one copy of those).
void ContinuousBatch::drop_idle_rows() {
  if (next_prompt_ < prompts_.size()) return;
  std::vector<int64_t> busy;
  for (size_t r = 0; r < row_prompt_.size(); ++r)
    if (row_prompt_[r] >= 0) busy.push_back(static_cast<int64_t>(r));
  if (busy.empty() || 2 * busy.size() > row_prompt_.size()) return;
  cache_keep_rows(cache_, busy);
  std::vector<int64_t> prompt, token, pos;
  for (int64_t r : busy) {
    prompt.push_back(row_prompt_[static_cast<size_t>(r)]);
    token.push_back(row_token_[static_cast<size_t>(r)]);
    pos.push_back(row_pos_[static_cast<size_t>(r)]);
  }
  row_prompt_ = prompt;
  row_token_ = token;
  row_pos_ = pos;
}

Samples ContinuousBatch::run() {
  admit();
  while (std::any_of(row_prompt_.begin(), row_prompt_.end(), [](int64_t p) { return p >= 0; })) {
    step();
    admit();
    drop_idle_rows();
  }
  return std::move(out_);
}

}  // namespace

Samples sample_continuous(Transformer& model, const std::vector<std::vector<int32_t>>& prompts, const SamplingConfig& cfg,
                          int32_t eos, int32_t pad, const std::vector<int64_t>& limits) {
  KEEL_CHECK(cfg.slots > 0, "continuous batching needs slots > 0");
  KEEL_CHECK(limits.size() == prompts.size(), limits.size() << " response bounds for " << prompts.size() << " prompts");
  if (prompts.empty()) return {};
  c10::InferenceMode inference;
  const bool was_training = model->is_training();
  model->eval();
  ContinuousBatch batch(model, prompts, cfg, eos, pad, limits);
  auto out = batch.run();
  if (was_training) model->train();
  return out;
}

}  // namespace keel
