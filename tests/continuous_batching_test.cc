// Continuous batching gives the numbers of the plain computation: a per-row KV cache whose rows
// take new prompts mid-run gives each row the logits of that row alone, and sampling with fewer
// rows than prompts keeps every response's exact behaviour log-probs and bounds.
#include <gtest/gtest.h>

#include <algorithm>

#include "actors/continuous_sampler.h"
#include "core/padded_batch.h"
#include "core/transformer.h"
#include "support/test_support.h"

namespace keel {
namespace {

constexpr int32_t kEos = 2, kPad = 3;

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

// Logits [T, V] of one sequence run alone, without a cache.
torch::Tensor alone(Transformer& m, const std::vector<int32_t>& seq) {
  std::vector<int64_t> ids(seq.begin(), seq.end());
  return m->logits(m->hidden({torch::tensor(ids).unsqueeze(0), {}, {}, {}})).squeeze(0);
}

class ContinuousTest : public ::testing::TestWithParam<Family> {};

TEST_P(ContinuousTest, PerRowCacheRowsEqualEachSequenceAlone) {
  auto m = test::lively_model(GetParam(), 61, 32);
  torch::NoGradGuard ng;
  const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7}, {8, 9, 10, 11, 12, 13, 14}, {15, 16, 17, 18, 19}, {20, 21}};
  auto padded = left_pad(prompts, kPad);
  const int64_t L = padded.tokens.size(1);
  auto prefix = m->make_cache(4, L);
  m->hidden({padded.tokens, padded.positions, padded.key_mask, {}}, &prefix);
  // Rows 0 and 1 take prompts 2 and 0; after two steps row 0 ends and takes prompt 1, then prompt 3.
  auto cache = m->make_cache(2, 12, /*per_row=*/true);
  std::vector<std::vector<int32_t>> seq = {prompts[2], prompts[0]};
  auto take = [&](int64_t row, size_t p) {
    cache_take_prefix(cache, row, prefix, static_cast<int64_t>(p), L - static_cast<int64_t>(prompts[p].size()),
                      static_cast<int64_t>(prompts[p].size()));
    seq[static_cast<size_t>(row)] = prompts[p];
  };
  take(0, 2);
  take(1, 0);
  for (int step = 0; step < 6; ++step) {
    if (step == 2) take(0, 1);
    if (step == 4) take(0, 3);
    std::vector<int64_t> tok, pos;
    for (auto& s : seq) {
      s.push_back(30 + step);  // teacher-forced continuation
      tok.push_back(s.back());
      pos.push_back(static_cast<int64_t>(s.size()) - 1);
    }
    auto out = m->logits(m->hidden({torch::tensor(tok).view({2, 1}), torch::tensor(pos).view({2, 1}), {}, {}}, &cache));
    for (int64_t r = 0; r < 2; ++r) {
      auto ref = alone(m, seq[static_cast<size_t>(r)]);
      EXPECT_LT(max_diff(out[r][0], ref[ref.size(0) - 1]), 1e-5) << "row " << r << " step " << step;
    }
  }
  EXPECT_EQ(cache.row_length[0], 4);  // prompt 3 (2 tokens) and two steps
  EXPECT_EQ(cache.row_length[1], 9);
}

SamplingConfig lively_sampling(int64_t slots) {
  SamplingConfig cfg;
  cfg.temperature = 0.5;
  cfg.max_new_tokens = 8;
  cfg.seed = 5;
  cfg.slots = slots;
  return cfg;
}

// Seven prompts in three runs of identical prompts (a group of 3, a single, a group of 3).
const std::vector<std::vector<int32_t>> kPrompts = {{5, 6, 7}, {5, 6, 7}, {5, 6, 7}, {9, 10, 11, 12, 13},
                                                    {14, 15},  {14, 15},  {14, 15}};
const std::vector<int64_t> kLimits = {8, 1, 5, 8, 3, 8, 2};

// The token this model samples most often: as EOS, it ends some responses before their bound.
int32_t likely_token(Transformer& m) {
  auto cfg = lively_sampling(0);
  cfg.stop_at_eos = false;
  std::vector<int> count(61, 0);
  for (const auto& r : sample(m, kPrompts, cfg, kEos, kPad).responses)
    for (int32_t t : r) ++count[static_cast<size_t>(t)];
  return static_cast<int32_t>(std::max_element(count.begin(), count.end()) - count.begin());
}

TEST_P(ContinuousTest, EveryResponseKeepsItsExactBehaviourLogprobsAndBound) {
  auto m = test::lively_model(GetParam(), 61, 32);
  const int32_t eos = likely_token(m);
  auto s = sample(m, kPrompts, lively_sampling(3), eos, kPad, kLimits);
  EXPECT_EQ(s.prefill_rows, 3);  // one per run of identical prompts
  torch::NoGradGuard ng;
  int64_t eos_ends = 0, tokens = 0;
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    const auto& r = s.responses[i];
    ASSERT_FALSE(r.empty());
    ASSERT_LE(static_cast<int64_t>(r.size()), kLimits[i]) << "prompt " << i;
    EXPECT_EQ(s.finished[i], r.back() == eos) << "prompt " << i;
    if (!s.finished[i]) {
      EXPECT_EQ(static_cast<int64_t>(r.size()), kLimits[i]) << "prompt " << i;
    }
    eos_ends += s.finished[i];
    tokens += static_cast<int64_t>(r.size());
    auto seq = kPrompts[i];
    seq.insert(seq.end(), r.begin(), r.end());
    const auto P = static_cast<int64_t>(kPrompts[i].size()), n = static_cast<int64_t>(r.size());
    std::vector<int64_t> targets(r.begin(), r.end());
    auto lp = token_logprobs(alone(m, seq).narrow(0, P - 1, n), torch::tensor(targets), 0.5);
    for (int64_t t = 0; t < n; ++t)
      EXPECT_NEAR(s.logprobs[i][static_cast<size_t>(t)], lp[t].item<float>(), 1e-5) << "prompt " << i << " token " << t;
  }
  // A response's first token comes from its prompt's prefill, each later one from a step that
  // serves up to three rows at once.
  EXPECT_LE(s.steps, tokens - 7);
  EXPECT_GE(3 * s.steps, tokens - 7);
  EXPECT_GE(eos_ends, 1);
  auto again = sample(m, kPrompts, lively_sampling(3), eos, kPad, kLimits);
  EXPECT_EQ(again.responses, s.responses);
  EXPECT_EQ(again.logprobs, s.logprobs);
}

TEST_P(ContinuousTest, GreedyResponsesEqualStaticBatching) {
  auto m = test::lively_model(GetParam(), 61, 32);
  auto cfg = lively_sampling(0);
  cfg.temperature = 0;
  auto reference = sample(m, kPrompts, cfg, kEos, kPad, kLimits);
  for (int64_t slots : {1, 2, 4, 7, 16}) {
    cfg.slots = slots;
    auto s = sample(m, kPrompts, cfg, kEos, kPad, kLimits);
    EXPECT_EQ(s.responses, reference.responses) << slots << " slots";
    EXPECT_EQ(s.finished, reference.finished) << slots << " slots";
    for (size_t i = 0; i < kPrompts.size(); ++i)
      for (size_t t = 0; t < s.logprobs[i].size(); ++t)
        EXPECT_NEAR(s.logprobs[i][t], reference.logprobs[i][t], 1e-5) << slots << " slots, prompt " << i;
  }
}

TEST(ContinuousSampling, BadResponseBoundsAreErrorsNamingThePrompt) {
  auto m = test::lively_model(Family::kGpt2, 61, 32);
  auto cfg = lively_sampling(2);
  const std::vector<std::vector<int32_t>> prompts = {{5}, {6}};
  EXPECT_NE(test::keel_error_of([&] { sample(m, prompts, cfg, kEos, kPad, {4, 0}); }).find("prompt 1"), std::string::npos);
  EXPECT_NE(test::keel_error_of([&] { sample(m, prompts, cfg, kEos, kPad, {9, 1}); }).find("max-new-tokens"), std::string::npos);
  EXPECT_NE(test::keel_error_of([&] { sample(m, prompts, cfg, kEos, kPad, {1}); }).find("1 response-length bounds for 2"),
            std::string::npos);
  cfg.slots = -1;
  EXPECT_NE(test::keel_error_of([&] { sample(m, prompts, cfg, kEos, kPad); }).find("decode-slots"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Families, ContinuousTest, ::testing::Values(Family::kGpt2, Family::kLlama),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace keel
