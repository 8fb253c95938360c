// Incremental decoding, left padding and packing give the logits of the plain computation.
#include <gtest/gtest.h>

#include "actors/sampler.h"
#include "core/transformer.h"
#include "support/test_support.h"

namespace keel {
namespace {

Transformer make_model(Family f) { return test::lively_model(f, 61, 32); }

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

class CacheTest : public ::testing::TestWithParam<Family> {};

TEST_P(CacheTest, IncrementalDecodingEqualsFullRecomputation) {
  auto m = make_model(GetParam());
  torch::NoGradGuard ng;
  torch::manual_seed(1);
  auto tokens = torch::randint(0, 61, {2, 10}, torch::kLong);
  auto full = m->logits(m->hidden({tokens, {}, {}, {}}));
  auto cache = m->make_cache(2, 16);
  std::vector<torch::Tensor> parts;
  parts.push_back(m->logits(m->hidden({tokens.narrow(1, 0, 4), {}, {}, {}}, &cache)));
  for (int64_t t = 4; t < 10; ++t) parts.push_back(m->logits(m->hidden({tokens.narrow(1, t, 1), {}, {}, {}}, &cache)));
  EXPECT_EQ(cache.length, 10);
  EXPECT_LT(max_diff(torch::cat(parts, 1), full), 1e-5);
}

TEST_P(CacheTest, LeftPaddedBatchEqualsEachRowAlone) {
  auto m = make_model(GetParam());
  torch::NoGradGuard ng;
  const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7}, {8, 9, 10, 11, 12, 13, 14}, {15, 16, 17, 18, 19}};
  const std::vector<int32_t> forced = {20, 21, 22, 23};  // teacher-forced continuation
  auto padded = left_pad(prompts, 3);
  auto cache = m->make_cache(3, padded.tokens.size(1) + 4);
  auto last = m->logits(m->hidden({padded.tokens, padded.positions, padded.key_mask, {}}, &cache)).select(1, -1);
  std::vector<torch::Tensor> steps = {last};
  auto pos = padded.positions.select(1, -1) + 1;
  for (size_t s = 0; s + 1 < forced.size(); ++s) {
    auto tok = torch::full({3, 1}, forced[s], torch::kLong);
    steps.push_back(m->logits(m->hidden({tok, pos.unsqueeze(1), {}, {}}, &cache)).select(1, 0));
    pos = pos + 1;
  }
  for (size_t b = 0; b < prompts.size(); ++b) {
    std::vector<int64_t> seq(prompts[b].begin(), prompts[b].end());
    seq.insert(seq.end(), forced.begin(), forced.end() - 1);
    auto alone = m->logits(m->hidden({torch::tensor(seq).unsqueeze(0), {}, {}, {}})).squeeze(0);
    for (size_t s = 0; s < steps.size(); ++s) {
      const int64_t t = static_cast<int64_t>(prompts[b].size() - 1 + s);
      EXPECT_LT(max_diff(steps[s][static_cast<int64_t>(b)], alone[t]), 1e-5) << "row " << b << " step " << s;
    }
  }
}

TEST_P(CacheTest, PackedSegmentsDoNotAttendAcrossExamples) {
  auto m = make_model(GetParam());
  torch::NoGradGuard ng;
  auto a = torch::tensor({4, 5, 6, 7, 8}, torch::kLong), b = torch::tensor({9, 10, 11}, torch::kLong);
  auto packed = torch::cat({a, b}).unsqueeze(0);
  auto positions = torch::tensor({0, 1, 2, 3, 4, 0, 1, 2}, torch::kLong).unsqueeze(0);
  auto segments = torch::tensor({1, 1, 1, 1, 1, 2, 2, 2}, torch::kLong).unsqueeze(0);
  auto out = m->logits(m->hidden({packed, positions, {}, segments})).squeeze(0);
  auto la = m->logits(m->hidden({a.unsqueeze(0), {}, {}, {}})).squeeze(0);
  auto lb = m->logits(m->hidden({b.unsqueeze(0), {}, {}, {}})).squeeze(0);
  EXPECT_LT(max_diff(out.narrow(0, 0, 5), la), 1e-5);
  EXPECT_LT(max_diff(out.narrow(0, 5, 3), lb), 1e-5);
}

TEST_P(CacheTest, BehaviourLogprobsEqualRecomputedTemperatureScaledLogprobs) {
  auto m = make_model(GetParam());
  SamplingConfig cfg;
  cfg.temperature = 0.7;
  cfg.max_new_tokens = 6;
  cfg.stop_at_eos = false;
  cfg.seed = 9;
  const std::vector<std::vector<int32_t>> prompts = {{5, 6}, {7, 8, 9, 10}};
  auto s = sample(m, prompts, cfg, 2, 3);
  torch::NoGradGuard ng;
  for (size_t b = 0; b < prompts.size(); ++b) {
    ASSERT_EQ(s.responses[b].size(), 6u);
    std::vector<int64_t> seq(prompts[b].begin(), prompts[b].end());
    seq.insert(seq.end(), s.responses[b].begin(), s.responses[b].end());
    auto ids = torch::tensor(seq).unsqueeze(0);
    auto logits = m->logits(m->hidden({ids, {}, {}, {}}));
    const int64_t P = static_cast<int64_t>(prompts[b].size());
    auto lp = token_logprobs(logits.narrow(1, P - 1, 6), ids.narrow(1, P, 6), 0.7).squeeze(0);
    for (int64_t t = 0; t < 6; ++t) EXPECT_NEAR(s.logprobs[b][static_cast<size_t>(t)], lp[t].item<float>(), 1e-5);
  }
  // Same seed, same samples; top-k 1 is greedy.
  auto again = sample(m, prompts, cfg, 2, 3);
  EXPECT_EQ(again.responses, s.responses);
  cfg.top_k = 1;
  auto topk1 = sample(m, prompts, cfg, 2, 3);
  cfg.top_k = 0;
  cfg.temperature = 0;
  auto greedy = sample(m, prompts, cfg, 2, 3);
  EXPECT_EQ(topk1.responses, greedy.responses);
}

TEST_P(CacheTest, TopPKeepsOnlyTheNucleus) {
  auto m = make_model(GetParam());
  SamplingConfig cfg;
  cfg.temperature = 1.0;
  cfg.top_p = 1e-6;  // only the most likely token survives
  cfg.max_new_tokens = 5;
  cfg.stop_at_eos = false;
  auto nucleus = sample(m, {{5, 6, 7}}, cfg, 2, 3);
  cfg.temperature = 0;
  auto greedy = sample(m, {{5, 6, 7}}, cfg, 2, 3);
  EXPECT_EQ(nucleus.responses, greedy.responses);
}

INSTANTIATE_TEST_SUITE_P(Families, CacheTest, ::testing::Values(Family::kGpt2, Family::kLlama),
                         [](const auto& info) { return std::string(family_name(info.param)); });

}  // namespace
}  // namespace keel
