#include "learner/pair_batch.h"

#include "core/checkpoint.h"

#include <cmath>
#include <sstream>

#include "core/error.h"
#include "core/hash.h"
#include "core/safetensors.h"
#include "learner/algos/dpo_loss.h"
#include "learner/algos/reward_loss.h"

namespace keel {

namespace {

// How much of a pair fits in max_len per row. The prompt is cut once for both sides (so chosen and
// rejected condition on the same tokens): its first token (BOS) stays, then its newest tokens, down
// to half a row; each response then keeps what fits after the prompt.
struct PairCut {
  int64_t prompt_tail = 0;  // newest prompt tokens kept after the first
  int64_t chosen = 0, rejected = 0;
  bool truncated = false;
};

PairCut cut_pair(int64_t prompt, int64_t chosen, int64_t rejected, int64_t max_len) {
  PairCut c{prompt - 1, chosen, rejected, false};
  const int64_t longest = std::max(chosen, rejected);
  if (prompt + longest <= max_len) return c;
  c.truncated = true;
  const int64_t prompt_kept = std::min(prompt, std::max(max_len - longest, max_len / 2));
  c.prompt_tail = prompt_kept - 1;
  c.chosen = std::min(chosen, max_len - prompt_kept);
  c.rejected = std::min(rejected, max_len - prompt_kept);
  return c;
}

void check_tokens(const PreferencePair& p, int64_t i, int64_t vocab) {
  KEEL_CHECK(!p.prompt.empty(), "preference pair " << i << " has an empty prompt (it needs at least BOS)");
  KEEL_CHECK(!p.chosen.empty() && !p.rejected.empty(), "preference pair " << i << " has an empty response");
  for (const auto* part : {&p.prompt, &p.chosen, &p.rejected})
    for (int32_t t : *part)
      KEEL_CHECK(t >= 0 && t < vocab, "pair " << i << " ("
                                              << (part == &p.prompt   ? "prompt"
                                                  : part == &p.chosen ? "chosen"
                                                                      : "rejected")
                                              << "): token id " << t << " outside the vocabulary of " << vocab);
}

}  // namespace

PairBatch make_pair_batch(const std::vector<PreferencePair>& pairs, int64_t max_len, int64_t pad_id, int64_t vocab,
                          torch::Device device) {
  KEEL_CHECK(!pairs.empty(), "an empty batch of preference pairs");
  KEEL_CHECK(max_len >= 4, "--max-len must be at least 4");
  const auto P = static_cast<int64_t>(pairs.size());
  PairBatch b;
  b.pairs = P;
  std::vector<std::vector<int64_t>> rows(2 * P);
  std::vector<int64_t> prompt_len(2 * P);
  bool all_ref = true;
  std::vector<float> ref(2 * P), rewards(2 * P);
  for (int64_t i = 0; i < P; ++i) {
    const auto& p = pairs[i];
    check_tokens(p, i, vocab);
    const auto cut = cut_pair(static_cast<int64_t>(p.prompt.size()), static_cast<int64_t>(p.chosen.size()),
                              static_cast<int64_t>(p.rejected.size()), max_len);
    b.truncated += cut.truncated;
    for (int side = 0; side < 2; ++side) {
      const auto& resp = side == 0 ? p.chosen : p.rejected;
      auto& row = rows[side * P + i];
      row.assign(1, p.prompt.front());
      row.insert(row.end(), p.prompt.end() - cut.prompt_tail, p.prompt.end());
      row.insert(row.end(), resp.begin(), resp.begin() + (side == 0 ? cut.chosen : cut.rejected));
      prompt_len[side * P + i] = 1 + cut.prompt_tail;
      const float r = side == 0 ? p.ref_chosen : p.ref_rejected;
      all_ref = all_ref && !std::isnan(r);
      ref[side * P + i] = r;
      rewards[side * P + i] = side == 0 ? p.chosen_reward : p.rejected_reward;
    }
  }
  int64_t T = 0;
  for (const auto& r : rows) T = std::max<int64_t>(T, static_cast<int64_t>(r.size()));
  b.ids = torch::full({2 * P, T}, std::max<int64_t>(pad_id, 0), torch::kInt64);
  b.key_mask = torch::zeros({2 * P, T}, torch::kBool);
  b.loss_mask = torch::zeros({2 * P, T}, torch::kFloat32);
  b.lengths = torch::zeros({2 * P}, torch::kFloat32);
  auto tok = b.ids.accessor<int64_t, 2>();
  auto km = b.key_mask.accessor<bool, 2>();
  auto lm = b.loss_mask.accessor<float, 2>();
  for (int64_t r = 0; r < 2 * P; ++r) {
    const auto n = static_cast<int64_t>(rows[r].size());
    for (int64_t t = 0; t < n; ++t) {
      tok[r][t] = rows[r][t];
      km[r][t] = true;
      if (t >= prompt_len[r]) lm[r][t] = 1.0f;
    }
    b.lengths[r] = static_cast<float>(n - prompt_len[r]);
  }
  b.ids = b.ids.to(device);
  b.key_mask = b.key_mask.to(device);
  b.loss_mask = b.loss_mask.to(device);
  b.lengths = b.lengths.to(device);
  if (all_ref) b.ref = torch::tensor(ref).to(device);
  b.rewards = torch::tensor(rewards).to(device);
  b.units = P;
  b.tokens = 0;
  for (const auto& r : rows) b.tokens += static_cast<int64_t>(r.size());
  return b;
}

namespace {
torch::Tensor hidden_of(Transformer& model, const PairBatch& b) { return model->hidden({b.ids, {}, b.key_mask, {}}); }
}  // namespace

torch::Tensor pair_logprobs(Transformer& model, const PairBatch& b) {
  return sequence_logprobs(model->logits(hidden_of(model, b)), b.ids, b.loss_mask);
}

torch::Tensor pair_rewards(Transformer& model, const PairBatch& b) {
  return read_last_valid(model->reward(hidden_of(model, b)), b.key_mask);
}

std::string model_identity(const std::string& model_dir) {
  const auto bytes = read_file(model_weights_path(model_dir));
  std::ostringstream os;
  os << "fnv1a64:" << std::hex << fnv1a64(bytes);
  return os.str();
}

std::string reference_cache_key(const std::string& model_dir) { return model_identity(model_dir) + " pair-cut-2"; }

}  // namespace keel
