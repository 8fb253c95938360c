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
    KEEL_CHECK(!p.chosen.empty() && !p.rejected.empty(), "preference pair " << i << " has an empty response");
    for (int side = 0; side < 2; ++side) {
      const auto& resp = side == 0 ? p.chosen : p.rejected;
      const char* name = side == 0 ? "chosen" : "rejected";
      for (const auto* part : {&p.prompt, &resp})
        for (int32_t t : *part)
          KEEL_CHECK(t >= 0 && t < vocab,
                     "pair " << i << " (" << name << "): token id " << t << " outside the vocabulary of " << vocab);
      auto prompt_n = static_cast<int64_t>(p.prompt.size()), resp_n = static_cast<int64_t>(resp.size());
      if (prompt_n + resp_n > max_len) {
        ++b.truncated;
        prompt_n = std::min(prompt_n, std::max(max_len - resp_n, max_len / 2));
        resp_n = std::min(resp_n, max_len - prompt_n);
      }
      auto& row = rows[side * P + i];
      row.assign(p.prompt.end() - prompt_n, p.prompt.end());
      row.insert(row.end(), resp.begin(), resp.begin() + resp_n);
      prompt_len[side * P + i] = prompt_n;
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

}  // namespace keel
