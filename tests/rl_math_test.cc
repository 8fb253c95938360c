// RLHF test vectors TV1-TV11 and TV14, reproduced by keel's pure loss and advantage functions in
// float64. The numbers are derived in plain PyTorch by tests/reference/rlhf_vectors/vectors.py
// (TV1-TV7), vectors2.py (TV6b, TV8-TV11) and vectors3.py (TV14); each prints them when run with
// /usr/bin/python3. Plus a pitfall these functions own: masked tokens inside a response are skipped by GAE.
#include <gtest/gtest.h>

#include "learner/algos/dpo_loss.h"
#include "learner/algos/gae.h"
#include "learner/algos/grpo.h"
#include "learner/algos/kl.h"
#include "learner/algos/masked.h"
#include "learner/algos/ppo_loss.h"
#include "learner/algos/reward_loss.h"
#include "learner/algos/rloo.h"

namespace keel {
namespace {

torch::Tensor t(std::vector<double> v) { return torch::tensor(v, torch::kFloat64); }
torch::Tensor row(std::vector<double> v) { return t(std::move(v)).unsqueeze(0); }

void expect_near(const torch::Tensor& actual, std::vector<double> expected, double tol = 1e-9) {
  auto a = actual.reshape({-1}).to(torch::kFloat64);
  ASSERT_EQ(a.numel(), static_cast<int64_t>(expected.size()));
  for (int64_t i = 0; i < a.numel(); ++i)
    EXPECT_NEAR(a[i].item<double>(), expected[static_cast<size_t>(i)], tol) << "index " << i;
}

TEST(Tv1, KlEstimators) {
  auto logp = t({-1.0, -2.0, -0.5}), ref = t({-1.2, -1.5, -0.5});
  expect_near(kl_estimate(logp, ref, KlEstimator::kK1), {0.2, -0.5, 0.0});
  expect_near(kl_estimate(logp, ref, KlEstimator::kK2), {0.02, 0.125, 0.0});
  expect_near(kl_estimate(logp, ref, KlEstimator::kK3), {0.018730753077981888, 0.1487212707001282, 0.0});
}

TEST(Tv2, RewardsWithKlPenaltyAndScoreAtTheEnd) {
  auto logp = row({-1.0, -2.0, -0.5}), ref = row({-1.2, -1.5, -0.5}), mask = torch::ones({1, 3});
  auto score = t({1.5});
  expect_near(kl_penalized_rewards(kl_estimate(logp, ref, KlEstimator::kK1), mask, score, 0.1), {-0.02, 0.05, 1.5});
  expect_near(kl_penalized_rewards(kl_estimate(logp, ref, KlEstimator::kK3), mask, score, 0.1),
              {-0.001873075307798189, -0.01487212707001282, 1.5});
  EXPECT_NEAR(kl_estimate(logp, ref, KlEstimator::kK1).sum().item<double>(), -0.3, 1e-12);
}

TEST(Tv3, Gae) {
  auto r = row({-0.02, 0.05, -0.01, 1.0}), v = row({0.5, 0.6, 0.7, 0.8}), m = torch::ones({1, 4}, torch::kFloat64);
  auto a = gae(r, v, m, 1.0, 0.95);
  expect_near(a.advantages, {0.4752, 0.416, 0.28, 0.2});
  expect_near(a.returns, {0.9752, 1.016, 0.98, 1.0});
  a = gae(r, v, m, 0.99, 0.95);
  expect_near(a.advantages, {0.447405821525, 0.39702905, 0.2701, 0.2});
  expect_near(a.returns, {0.947405821525, 0.99702905, 0.9701, 1.0});
  a = gae(r, v, m, 1.0, 1.0);
  expect_near(a.returns, {1.02, 1.04, 0.99, 1.0});
  auto a95 = gae(r, v, m, 1.0, 0.95).advantages;
  expect_near(masked_whiten(a95, m, true, false),
              {1.2185346499079541, 0.6736913623358182, -0.5779756496542259, -1.3142503625895465}, 1e-7);
  expect_near(masked_whiten(a95, m, true, true),
              {1.0552820739440765, 0.5834338958663631, -0.5005416483662235, -1.1381743214442162}, 1e-7);
}

TEST(Tv4, WhiteningBiasedAndUnbiased) {
  auto R = torch::tensor({1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0}, torch::kFloat64).reshape({3, 3});
  auto m = torch::ones({3, 3}, torch::kFloat64);
  expect_near(masked_whiten(R, m, false, false),
              {0.05080677770651998, 0.4381050832798903, 0.8254033888532596, 1.2127016944266298, 1.6, 1.9872983055733695,
               2.37459661114674, 2.7618949167201094, 3.149193222293479},
              1e-7);
  expect_near(masked_whiten(R, m, false, true),
              {0.13940661069244586, 0.5045549580193347, 0.8697033053462225, 1.2348516526731113, 1.6, 1.965148347326888,
               2.330296694653777, 2.6954450419806646, 3.060593389307553},
              1e-7);
  expect_near(masked_whiten(R, m, true, false),
              {-1.54919322229348, -1.1618949167201098, -0.7745966111467405, -0.38729830557337025, 0.0, 0.3872983055733694,
               0.7745966111467396, 1.1618949167201091, 1.5491932222934792},
              1e-7);
}

TEST(Tv5, AdaptiveKlController) {
  AdaptiveKlConfig c{0.2, 6.0, 10000};
  for (auto [kl, expected] :
       std::vector<std::pair<double, double>>{{8.0, 0.202048}, {5.0, 0.19829333333333335}, {6.0, 0.2}, {3.0, 0.197952}}) {
    KlController k(c);
    k.update(kl, 512);
    EXPECT_NEAR(k.value(), expected, 1e-12) << "kl " << kl;
  }
  KlController k({0.15, 6.0, 10000});
  k.update(10, 512);
  EXPECT_NEAR(k.value(), 0.151536, 1e-12);
  k.update(7, 512);
  EXPECT_NEAR(k.value(), 0.1528291072, 1e-12);
  k.update(4, 512);
  EXPECT_NEAR(k.value(), 0.151264137142272, 1e-12);
  KlController k256(c);
  k256.update(8, 256);
  EXPECT_NEAR(k256.value(), 0.201024, 1e-12);
  KlController fixed(c, /*adaptive=*/false);
  fixed.update(100, 512);
  EXPECT_EQ(fixed.value(), 0.2);
}

TEST(Tv6, ClippedPolicyAndValueLoss) {
  auto m = torch::ones({1, 4}, torch::kFloat64);
  auto p =
      clipped_policy_loss(row({-1.0, -0.5, -2.0, -0.1}), row({-1.2, -0.4, -1.5, -0.1}), row({1.0, -1.0, -0.5, 2.0}), m, 0.2, 0.2);
  EXPECT_NEAR(p.loss.item<double>(), -0.4737906454910101, 1e-12);
  EXPECT_NEAR(p.clipfrac.item<double>(), 0.5, 1e-12);
  EXPECT_NEAR(p.approx_kl.item<double>(), 0.0375, 1e-12);
  auto v = clipped_value_loss(row({0.9, 0.2, -0.3, 1.5}), row({0.5, 0.3, 0.0, 1.0}), row({1.0, 0.0, -0.5, 1.1}), m, 0.2);
  EXPECT_NEAR(v.loss.item<double>(), 0.0475, 1e-12);
  EXPECT_NEAR(v.clipfrac.item<double>(), 0.5, 1e-12);
  EXPECT_NEAR(p.loss.item<double>() + 0.1 * v.loss.item<double>(), -0.4690406454910101, 1e-12);
  // TV6b: dual clip bounds the loss of a negative advantage at -A * c.
  auto one = torch::ones({1, 1}, torch::kFloat64);
  auto standard = clipped_policy_loss(row({1.5}), row({0.0}), row({-1.0}), one, 0.2, 0.2);
  auto dual = clipped_policy_loss(row({1.5}), row({0.0}), row({-1.0}), one, 0.2, 0.2, 3.0);
  EXPECT_NEAR(standard.loss.item<double>(), 4.4816890703380645, 1e-12);
  EXPECT_NEAR(dual.loss.item<double>(), 3.0, 1e-12);
}

TEST(Tv7, EntropyAndTemperatureScaledLogprobs) {
  auto logits = t({1, 2, 3});
  EXPECT_NEAR(entropy_from_logits(logits).item<double>(), 0.8323955818399398, 1e-6);
  EXPECT_NEAR(entropy_from_logits(logits, 0.7).item<double>(), 0.6505726491125587, 1e-6);
  auto lp = torch::log_softmax(logits / 0.7, 0);
  EXPECT_NEAR(lp[2].item<double>(), -0.26011840264474484, 1e-12);
  EXPECT_NEAR(lp[0].item<double>(), -3.1172612597876017, 1e-12);
}

TEST(Tv8, DpoFamily) {
  PairLogprobs lp{t({-10.0, -8.0}), t({-12.0, -7.0}), t({-10.5, -8.2}), t({-11.0, -7.5}), t({5, 4}), t({4, 6})};
  DpoConfig c;
  c.beta = 0.1;
  auto r = dpo_loss(lp, c);
  expect_near(r.losses, {0.6209570477895321, 0.7082596763414485});
  EXPECT_NEAR(r.losses.mean().item<double>(), 0.6646083620654903, 1e-12);
  expect_near(r.chosen_rewards, {0.05, 0.02});
  expect_near(r.rejected_rewards, {-0.1, 0.05});
  EXPECT_NEAR((r.chosen_rewards - r.rejected_rewards).mean().item<double>(), 0.06, 1e-12);
  EXPECT_NEAR((r.chosen_rewards > r.rejected_rewards).to(torch::kFloat64).mean().item<double>(), 0.5, 1e-12);
  c.type = DpoLossType::kHinge;
  expect_near(dpo_loss(lp, c).losses, {0.85, 1.03});
  c.type = DpoLossType::kIpo;
  expect_near(dpo_loss(lp, c).losses, {21.6225, 25.334444444444443});
  c.type = DpoLossType::kCdpo;
  c.label_smoothing = 0.1;
  expect_near(dpo_loss(lp, c).losses, {0.6359570477895321, 0.7052596763414485});
  c.type = DpoLossType::kRobust;
  expect_near(dpo_loss(lp, c).losses, {0.602207047789532, 0.7120096763414485});
  c = DpoConfig{DpoLossType::kSimpo, 2.0, 0.0, 1.0};
  expect_near(dpo_loss(lp, c).losses, {0.31326168751822286, 2.733842442709811});
}

TEST(Tv9, SequenceLogprobsUseTheShift) {
  auto logits =
      torch::tensor({0.1, 0.2, 0.3, 0.4, 1.0, 0.0, -1.0, 2.0, 0.5, 0.5, 0.5, 0.5, 2.0, 1.0, 0.0, -1.0, 9.0, 9.0, 9.0, 9.0},
                    torch::kFloat64)
          .reshape({1, 5, 4});
  auto tokens = torch::tensor({2, 1, 3, 0, 1}, torch::kLong).unsqueeze(0);
  auto loss_mask = torch::tensor({0, 0, 1, 1, 1}, torch::kLong).unsqueeze(0);  // labels -100 on the 2 prompt tokens
  EXPECT_NEAR(sequence_logprobs(logits, tokens, loss_mask).item<double>(), -3.2666737582422813, 1e-6);
  EXPECT_NEAR(sequence_logprobs(logits, tokens, loss_mask).item<double>() / 3, -1.088891252747427, 1e-6);
}

TEST(Tv10, BradleyTerryAccuracyNormalisationAndLastToken) {
  auto rc = t({1.0, 0.2, -0.3}), rr = t({0.5, 0.4, -1.3}), m = t({0.0, 0.1, 0.5});
  auto bt = bradley_terry_loss(rc, rr);
  EXPECT_NEAR(bt.loss.item<double>(), 0.5284925136933071, 1e-12);
  EXPECT_NEAR(bt.accuracy.item<double>(), 0.6666666666666666, 1e-7);
  EXPECT_NEAR(bradley_terry_loss(rc, rr, m).loss.item<double>(), 0.6008364042762468, 1e-12);
  EXPECT_NEAR(bradley_terry_loss(rc, rr, {}, 0.01).loss.item<double>() - bt.loss.item<double>(), 0.017233333333333337, 1e-12);
  auto n = fit_reward_norm(t({1, 2, 3, 6}));
  EXPECT_NEAR(n.gain, 0.5345224838248488, 1e-12);
  EXPECT_NEAR(n.bias, -1.6035674514745464, 1e-12);
  // Last valid token, right or left padded, read from a mask (not from pad ids: pitfall 11).
  auto scores = torch::arange(5, torch::kFloat64).unsqueeze(0).repeat({2, 1});
  auto mask = torch::tensor({1, 1, 1, 0, 0, 0, 0, 1, 1, 1}, torch::kLong).reshape({2, 5});
  expect_near(read_last_valid(scores, mask), {2, 4});
}

TEST(Tv11, GrpoAndRloo) {
  auto g1 = t({1, 0, 0, 1}), g2 = t({0.2, 0.5, 0.9, 0.4});
  expect_near(grpo_advantages(g1, 4, 1e-4), {0.8658754297607016, -0.8658754297607016, -0.8658754297607016, 0.8658754297607016});
  expect_near(grpo_advantages(g1, 4, 1e-6).narrow(0, 0, 1), {0.8660239037870368});
  expect_near(grpo_advantages(g1, 4, 1e-4, false), {0.5, -0.5, -0.5, 0.5});
  expect_near(grpo_advantages(g2, 4, 1e-4), {-1.01870329442667, 0.0, 1.3582710592355602, -0.33956776480888995});
  expect_near(grpo_advantages(g2, 4, 1e-6), {-1.0190458692034328, 0.0, 1.3587278256045772, -0.33968195640114424});
  expect_near(rloo_baselines(g1, 4), {0.3333333333333333, 0.6666666666666666, 0.6666666666666666, 0.3333333333333333});
  expect_near(rloo_advantages(g1, 4), {0.6666666666666667, -0.6666666666666666, -0.6666666666666666, 0.6666666666666667});
  expect_near(rloo_advantages(g2, 4), {-0.4, 0.0, 0.5333333333333333, -0.1333333333333333});
  // Two groups at once stay separate.
  expect_near(rloo_advantages(torch::cat({g1, g2}), 4).narrow(0, 4, 4), {-0.4, 0.0, 0.5333333333333333, -0.1333333333333333});
  expect_near(kl_estimate(t({-0.5, -1.0}), t({-0.7, -0.8}), KlEstimator::kK3), {0.018730753077981888, 0.0214027581601699});
}

TEST(Tv14, EndToEndMaskedAdvantagePipeline) {
  auto logp = row({-1.0, -0.8, -1.2, -0.3, 0}), ref = row({-1.1, -0.9, -1.0, -0.4, 0});
  auto v = row({0.2, 0.3, 0.25, 0.4, 0});
  auto mask = torch::tensor({1, 1, 1, 1, 0}, torch::kFloat64).unsqueeze(0);
  auto kl = kl_estimate(logp, ref, KlEstimator::kK1);
  expect_near(kl * mask, {0.1, 0.1, -0.2, 0.1, 0});
  auto rewards = kl_penalized_rewards(kl, mask, t({2.0}), 0.05);
  expect_near(rewards, {-0.005, -0.005, 0.01, 1.995, 0});
  auto a = gae(rewards, v, mask, 1.0, 0.95);
  expect_near(a.advantages, {1.554663125, 1.5364875, 1.67525, 1.595, 0});
  expect_near(a.returns, {1.754663125, 1.8364875, 1.92525, 1.995, 0});
  expect_near(masked_whiten(a.advantages, mask, true, true),
              {-0.5788087979587916, -0.8735996866909442, 1.3769925596662396, 0.07541592498349978, 0}, 1e-7);
}

TEST(Pitfalls, MaskedTokensAreSkippedByGae) {
  // A masked position inside the response (an observation token) carries values through (VERL form).
  auto r = row({0.0, 0.0, 1.0}), v = row({0.5, 9.0, 0.7});
  auto with_gap = gae(r, v, torch::tensor({1.0, 0.0, 1.0}, torch::kFloat64).unsqueeze(0), 1.0, 1.0);
  auto without = gae(row({0.0, 1.0}), row({0.5, 0.7}), torch::ones({1, 2}, torch::kFloat64), 1.0, 1.0);
  EXPECT_NEAR(with_gap.advantages[0][0].item<double>(), without.advantages[0][0].item<double>(), 1e-12);
  EXPECT_EQ(with_gap.advantages[0][1].item<double>(), 0.0);
}

}  // namespace
}  // namespace keel
