// What keeps RL honest (issue: RL that can be trusted): groups travel and are evicted whole and are
// found by group_id; a rollout batch that breaks the sampling contract (temperature, truncation,
// group size, tokenizer) is refused and counted, never trained on.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "actors/actor.h"
#include "learner/actor_learner_job.h"
#include "learner/algos/kl.h"
#include "learner/algos/off_policy.h"
#include "learner/algos/ppo_loss.h"
#include "learner/pair_batch.h"
#include "learner/ppo.h"
#include "learner/rollout_service.h"
#include "learner/sampling_contract.h"
#include "replay/rollout_queue.h"
#include "tests/support/test_support.h"
#include "wire/channel.h"

namespace keel {
namespace {

wire::Rollout member(uint64_t group, uint64_t version, int32_t token) {
  wire::Rollout r;
  r.prompt_tokens = {1, token};
  r.response_tokens = {token, 2};
  r.logprobs = {-0.5f, -0.25f};
  r.policy_version = version;
  r.group_id = group;
  r.uid = group * 100 + static_cast<uint64_t>(token);
  return r;
}

std::vector<wire::Rollout> group(uint64_t id, size_t size, uint64_t version = 0) {
  std::vector<wire::Rollout> g;
  for (size_t i = 0; i < size; ++i) g.push_back(member(id, version, static_cast<int32_t>(10 + i)));
  return g;
}

TEST(Groups, AQueueThatOverflowsEvictsAndGivesWholeGroups) {
  std::atomic<bool> stop{false};
  RolloutQueue q({1, true, 7});  // capacity 7 is not a multiple of G = 3
  for (uint64_t id = 1; id <= 4; ++id) q.push(group(id, 3));
  // 12 pushed, room for 7: the two oldest groups go whole (6 rollouts), never a part of one.
  EXPECT_EQ(q.stats().evicted, 6);
  EXPECT_EQ(q.size(), 6u);
  const auto got = q.take(6, 0, 50, stop);
  ASSERT_EQ(got.size(), 6u);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i].group_id, 3 + i / 3) << i;
  // A request that is not whole groups is an error naming the group size, not a split group.
  q.push(group(5, 3));
  EXPECT_NE(test::keel_error_of([&] { q.take(2, 0, 50, stop); }).find("not whole groups of 3"), std::string::npos);
}

TEST(Groups, StaleGroupsAreDroppedWhole) {
  std::atomic<bool> stop{false};
  RolloutQueue q({1, true, 100});
  q.push(group(1, 3, /*version=*/0));
  q.push(group(2, 3, /*version=*/4));
  const auto got = q.take(3, 4, 50, stop);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got.front().group_id, 2u);
  EXPECT_EQ(q.stats().dropped_stale, 3);
}

TEST(Groups, AnUpdateFindsGroupsByIdAndRefusesAnIncompleteOne) {
  std::vector<wire::Rollout> groups;
  for (uint64_t id : {7, 7, 7, 9, 9, 9}) groups.push_back(member(id, 0, 10));
  ASSERT_EQ(group_order(groups, 3), (std::vector<size_t>{0, 1, 2, 3, 4, 5}));
  auto torn = groups;
  std::swap(torn[2], torn[3]);  // 7 7 9 7 9 9: group 7 is cut in two
  auto err = test::keel_error_of([&] { group_order(torn, 3); });
  EXPECT_NE(err.find("group 7 has 2 rollouts"), std::string::npos) << err;
  groups.pop_back();
  err = test::keel_error_of([&] { group_order(groups, 3); });
  EXPECT_NE(err.find("group 9 has 2 rollouts"), std::string::npos) << err;
}

TEST(Groups, ABatchIsSplitIntoWholeGroupsOrRefused) {
  std::string why;
  auto groups = split_groups(group(4, 2), 2, &why);
  ASSERT_EQ(groups.size(), 1u);
  EXPECT_TRUE(why.empty());
  auto bad = group(4, 2);
  bad.push_back(member(5, 0, 11));  // a group of one where two are promised
  EXPECT_TRUE(split_groups(bad, 2, &why).empty());
  EXPECT_NE(why.find("the last group has 1 rollouts, not 2"), std::string::npos) << why;
  auto torn = group(4, 2);
  torn[1].group_id = 6;
  EXPECT_TRUE(split_groups(torn, 2, &why).empty());
  EXPECT_NE(why.find("group 4 has 1 rollouts"), std::string::npos) << why;
  auto twice = group(4, 2);
  for (auto& r : group(4, 2)) twice.push_back(r);  // two adjacent groups under one id
  EXPECT_TRUE(split_groups(twice, 2, &why).empty());
  EXPECT_NE(why.find("group 4 has more than 2 rollouts"), std::string::npos) << why;
}

wire::RolloutBatch batch(float temperature, uint32_t group_size) {
  wire::RolloutBatch b;
  b.temperature = temperature;
  b.group_size = group_size;
  b.tokenizer = "sentencepiece:abc";
  b.rollouts = group(3, group_size);
  return b;
}

// A rollout service on in-process sockets named after `name`, with no shared-memory region.
RolloutServiceOptions inproc_service(const std::string& name, SamplingContract contract) {
  RolloutServiceOptions o = test::inproc_rollout_service(name);
  o.contract = std::move(contract);
  return o;
}

TEST(SamplingContract, EachDifferenceIsNamedWithBothValues) {
  const SamplingContract c{0.7, 2, "sentencepiece:abc"};
  EXPECT_EQ(contract_violation(batch(0.7f, 2), c), "");
  EXPECT_NE(contract_violation(batch(1.0f, 2), c).find("sampled at temperature 1, the learner trains at 0.7"), std::string::npos);
  EXPECT_NE(contract_violation(batch(0.7f, 4), c).find("group size 4, the learner expects 2"), std::string::npos);
  EXPECT_NE(contract_violation(batch(0.0f, 2), c).find("greedy"), std::string::npos);
  auto nucleus = batch(0.7f, 2);
  nucleus.top_p = 0.9f;
  EXPECT_NE(contract_violation(nucleus, c).find("top-p 0.9"), std::string::npos);
  EXPECT_EQ(contract_violation(batch(0.7f, 4), {0.7, 0, "sentencepiece:abc"}), "")
      << "a learner with a value model takes any group";
  EXPECT_NE(contract_violation(batch(0.7f, 0), {0.7, 0, ""}).find("does not state its group size"), std::string::npos);
  auto other = batch(0.7f, 2);
  other.tokenizer = "sentencepiece:def";
  EXPECT_NE(contract_violation(other, c).find("tokenizer sentencepiece:def"), std::string::npos);
}

TEST(SamplingContract, TheRolloutServiceRefusesAndCountsABatchFromAnActorAtAnotherTemperature) {
  const auto o = inproc_service("contract", {0.7, 2, "sentencepiece:abc"});
  RolloutService service(o, ReplayOptions{});
  auto push = wire::zmq_connect(wire::SocketKind::kPush, o.rollouts_endpoint);
  wire::send_message(*push, {"actor-0", batch(1.0f, 2)});  // another temperature
  wire::send_message(*push, {"actor-1", batch(0.7f, 4)});  // another group size
  wire::send_message(*push, {"actor-2", batch(0.7f, 2)});  // keeps the contract
  const auto got = service.next(2, 0);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_TRUE(test::wait_until([&] { return service.stats().refused_batches == 2; }, std::chrono::seconds(5)));
  EXPECT_EQ(service.stats().batches, 1);
  EXPECT_EQ(service.replay_stats().received, 2) << "refused rollouts never reach the queue";
  service.stop();
}

TEST(SamplingContract, ALearnerThatTakesAnyGroupSizeFillsAnUpdateOfAnySize) {
  const auto o = inproc_service("any", {1.0, 0, ""});  // GAE: any group size
  RolloutService service(o, ReplayOptions{});
  auto push = wire::zmq_connect(wire::SocketKind::kPush, o.rollouts_endpoint);
  for (uint64_t id : {1, 2}) {
    wire::RolloutBatch b = batch(1.0f, 3);
    b.rollouts = group(id, 3);  // groups of 3 sharing their ids
    wire::send_message(*push, {"actor-0", b});
  }
  EXPECT_EQ(service.next(5, 0).size(), 5u) << "5 is not whole groups of 3, and need not be";
  EXPECT_EQ(service.stats().refused_batches, 0);
  service.stop();
}

TEST(SamplingContract, ALearnerWhoseEveryBatchIsRefusedStopsNamingWhy) {
  const auto o = inproc_service("refused", {1.0, 8, ""});
  RolloutService service(o, ReplayOptions{});
  auto push = wire::zmq_connect(wire::SocketKind::kPush, o.rollouts_endpoint);
  for (int i = 0; i < 8; ++i) wire::send_message(*push, {"actor-0", batch(1.0f, 2)});  // actors left at --group-size 2
  const auto err = test::keel_error_of([&] { service.next(8, 0); });
  EXPECT_NE(err.find("every rollout batch so far (8) breaks the learner's sampling contract"), std::string::npos) << err;
  EXPECT_NE(err.find("actor-0: group size 2, the learner expects 8"), std::string::npos) << err;
  service.stop();
}

TEST(SamplingContract, AnActorRefusesTruncatedOrGreedySamplingAtStart) {
  ActorOptions o;
  o.model_dir = "m";
  o.sampling.top_p = 0.9;
  EXPECT_NE(test::keel_error_of([&] { o.validate(); }).find("--top-p 0.9"), std::string::npos);
  o.sampling.top_p = 1.0;
  o.sampling.temperature = 0;
  EXPECT_NE(test::keel_error_of([&] { o.validate(); }).find("--temperature > 0"), std::string::npos);
}

// rlhf-math / issue numbers: a group whose scores are all equal, summed KL [2, 3.5, 1, 2.5].
TEST(SamplingContract, TheLauncherGivesActorsTheLearnersSettingsAndRefusesADifferentOne) {
  ActorLearnerJobOptions o;
  o.learner_args = {"--estimator", "grpo", "--group-size", "8", "--temperature=0.7"};
  o.actor_args = {"--families", "arithmetic"};
  const std::vector<std::string> want = {"--families", "arithmetic", "--temperature", "0.7", "--group-size", "8"};
  EXPECT_EQ(actor_args_with_learner_sampling(o), want);
  o.actor_args = {"--group-size", "8", "--temperature", "0.70"};  // the same values, spelled otherwise
  EXPECT_EQ(actor_args_with_learner_sampling(o), o.actor_args);
  o.init = "sft";
  o.actor_args = {"--group-size", "4"};
  const auto err = test::keel_error_of([&] { actor_learner_processes(o); });
  EXPECT_NE(err.find("--group-size is 8 but the actors' is 4"), std::string::npos) << err;
}

TEST(KlPlacement, KlFoldedIntoGrpoRewardsCancelsBetaButAsALossTermEqualScoresGiveZero) {
  const auto score = torch::tensor({1.0f, 1.0f, 1.0f, 1.0f});
  const auto kl = torch::tensor({2.0f, 3.5f, 1.0f, 2.5f});
  const std::vector<float> cancelled = {0.24f, -1.20f, 1.20f, -0.24f};
  for (double beta : {0.5, 0.05, 0.005}) {
    // The reward placement: -(KL - mean) / std(KL) whatever beta is (eps 1e-4 shifts beta 0.005 by 2%).
    const auto in_reward = sequence_advantages(score, kl, beta, AdvantageEstimator::kGrpo, 4);
    for (int64_t i = 0; i < 4; ++i) EXPECT_NEAR(in_reward[i].item<float>(), cancelled[static_cast<size_t>(i)], 0.03) << beta;
  }
  // KL as a loss term: the advantages see only the scores, and equal scores carry no signal.
  const auto in_loss = sequence_advantages(score, kl, 0.0, AdvantageEstimator::kGrpo, 4);
  EXPECT_TRUE(torch::equal(in_loss, torch::zeros({4})));
  EXPECT_EQ(parse_kl_placement("auto", AdvantageEstimator::kGrpo), KlPlacement::kLoss);
  EXPECT_EQ(parse_kl_placement("auto", AdvantageEstimator::kRloo), KlPlacement::kReward);
  // Dr. GRPO: the mean is removed, nothing is divided: scores [1, 0, 0, 1] -> [0.5, -0.5, -0.5, 0.5].
  const auto dr =
      sequence_advantages(torch::tensor({1.0f, 0.0f, 0.0f, 1.0f}), torch::zeros({4}), 0.0, AdvantageEstimator::kDrGrpo, 4);
  EXPECT_TRUE(torch::allclose(dr, torch::tensor({0.5f, -0.5f, -0.5f, 0.5f})));
}

// By hand: d = logp - ref = [0.5, -1]; k3 = exp(-d) - 1 + d = [0.106531, 0.718282], mean 0.412406;
// d(mean k3)/d(logp) = (1 - exp(-d)) / 2 = [0.196735, -0.859141].
TEST(KlPlacement, TheKlLossTermAndItsGradientMatchHandDerivedNumbers) {
  auto logp = torch::tensor({{-1.0, -2.0}}, torch::kFloat64).requires_grad_(true);
  const auto ref = torch::tensor({{-1.5, -1.0}}, torch::kFloat64);
  const auto mask = torch::ones({1, 2}, torch::kFloat64);
  auto k3 = kl_loss(logp, ref, mask, KlEstimator::kK3);
  EXPECT_NEAR(k3.item<double>(), 0.412406, 1e-6);
  k3.backward();
  EXPECT_NEAR(logp.grad()[0][0].item<double>(), 0.196735, 1e-6);
  EXPECT_NEAR(logp.grad()[0][1].item<double>(), -0.859141, 1e-6);
  EXPECT_NEAR(kl_loss(logp, ref, mask, KlEstimator::kK1).item<double>(), -0.25, 1e-12);
  // A token the reference finds near-impossible keeps k3 finite (the log-ratio is clamped at 20).
  const auto far = kl_estimate(torch::tensor({0.0}), torch::tensor({-1000.0}), KlEstimator::kK3);
  EXPECT_TRUE(torch::isfinite(far).all().item<bool>());
  const auto near_zero = kl_estimate(torch::tensor({-1000.0}), torch::tensor({0.0}), KlEstimator::kK3);
  EXPECT_NEAR(near_zero.item<double>() / (std::exp(20.0) - 21.0), 1.0, 1e-6);
}

// A long chosen and a short rejected response: the prompt is cut once, so both rows condition on
// the same prompt tokens, BOS first; the pair is counted once.
TEST(PairTruncation, BothSidesKeepTheSamePromptAndItsBos) {
  PreferencePair p;
  p.prompt = {1, 20, 21, 22, 23, 24, 25, 26};  // BOS then 7 tokens
  p.chosen = {30, 31, 32, 33, 34, 35, 2};
  p.rejected = {40, 2};
  const auto b = make_pair_batch({p}, 12, 0, 64, torch::kCPU);
  EXPECT_EQ(b.truncated, 1);
  const auto chosen = b.ids[0], rejected = b.ids[1];
  // The prompt keeps half the row (12 / 2 = 6, more than 12 - 7) for both rows: BOS and the 5 newest.
  const std::vector<int64_t> prompt = {1, 22, 23, 24, 25, 26};
  for (size_t t = 0; t < prompt.size(); ++t) {
    EXPECT_EQ(chosen[static_cast<int64_t>(t)].item<int64_t>(), prompt[t]) << t;
    EXPECT_EQ(rejected[static_cast<int64_t>(t)].item<int64_t>(), prompt[t]) << t;
  }
  EXPECT_EQ(b.lengths[0].item<float>(), 6.0f);  // the chosen side loses its last token
  EXPECT_EQ(b.lengths[1].item<float>(), 2.0f);
  EXPECT_EQ(b.loss_mask[1].sum().item<float>(), 2.0f);
  EXPECT_EQ(make_pair_batch({p}, 64, 0, 64, torch::kCPU).truncated, 0);
}

// TV12 (rlhf-math.md §6), derived in tests/reference/rlhf_vectors/vectors_off_policy.py.
TEST(OffPolicy, VtraceMatchesTv12AndReducesToTheReturnOnPolicy) {
  auto t = [](std::vector<double> v) { return torch::tensor(v, torch::kFloat64).unsqueeze(0); };
  const auto r = vtrace_from_discounts(t({0, 0.5, -0.5, -1.0}), t({0.99, 0.99, 0.99, 0.0}), t({0, 0, 0, 1}),
                                       t({0.5, 0.6, 0.7, 0.8}), torch::tensor({0.3}, torch::kFloat64), 1.0, 1.0, 1.0);
  const std::vector<double> vs = {0.7840609786141326, 0.7919807864789219, 0.7999805924029514, 0.8735758882342886};
  const std::vector<double> pg = {0.2840609786141327, 0.19198078647892192, 0.09998059240295146, 0.07357588823428846};
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_NEAR(r.vs[0][i].item<double>(), vs[static_cast<size_t>(i)], 1e-6) << i;
    EXPECT_NEAR(r.pg_advantages[0][i].item<double>(), pg[static_cast<size_t>(i)], 1e-6) << i;
  }
  // On-policy, gamma 1, the row's episode ending at its last valid token: the plain return.
  const auto mask = torch::tensor({{1.0, 1.0, 1.0, 1.0, 0.0}}, torch::kFloat64);
  const auto on = vtrace(torch::zeros({1, 5}, torch::kFloat64), t({-0.02, 0.05, -0.01, 1.0, 7.0}),
                         torch::zeros({1, 5}, torch::kFloat64), mask, 1.0);
  const std::vector<double> ret = {1.02, 1.04, 0.99, 1.0, 0.0};
  for (int64_t i = 0; i < 5; ++i) EXPECT_NEAR(on.vs[0][i].item<double>(), ret[static_cast<size_t>(i)], 1e-9) << i;
}

// TV15, derived in tests/reference/rlhf_vectors/vectors_off_policy.py.
TEST(OffPolicy, TruncatedImportanceWeightsAndTheDecoupledLossMatchTv15) {
  const auto prox = torch::tensor({{-1.0, -0.5, -2.0}, {-0.2, -3.0, 0.0}}, torch::kFloat64);
  const auto mu = torch::tensor({{-1.5, -0.5, -1.0}, {-1.2, -3.1, 0.0}}, torch::kFloat64);
  const auto mask = torch::tensor({{1.0, 1.0, 1.0}, {1.0, 1.0, 0.0}}, torch::kFloat64);
  auto expect = [](const torch::Tensor& got, std::vector<std::vector<double>> want) {
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t j = 0; j < 3; ++j)
        EXPECT_NEAR(got[i][j].item<double>(), want[static_cast<size_t>(i)][static_cast<size_t>(j)], 1e-6) << i << "," << j;
  };
  const auto token = truncated_is_weights(prox, mu, mask, 2.0, IsLevel::kToken, false);
  expect(token.weights, {{1.6487212707001282, 1.0, 0.36787944117144233}, {2.0, 1.1051709180756477, 0.0}});
  EXPECT_NEAR(token.truncated_share.item<double>(), 1.0 / 5, 1e-12);
  const auto masked = truncated_is_weights(prox, mu, mask, 2.0, IsLevel::kToken, true);
  expect(masked.weights, {{1.6487212707001282, 1.0, 0.0}, {0.0, 1.1051709180756477, 0.0}});
  const auto seq = truncated_is_weights(prox, mu, mask, 2.0, IsLevel::kSequence, false);
  expect(seq.weights, {{0.6065306597126334, 0.6065306597126334, 0.6065306597126334}, {2.0, 2.0, 0.0}});
  EXPECT_NEAR(seq.truncated_share.item<double>(), 0.5, 1e-12);
  const auto theta = prox + torch::tensor({{0.1, -0.1, 0.3}, {0.0, 0.2, 0.0}}, torch::kFloat64);
  const auto adv = torch::tensor({{1.0, -1.0, 1.0}, {-1.0, 1.0, 0.0}}, torch::kFloat64);
  const auto loss = clipped_policy_loss(theta, prox, adv, mask, 0.2, 0.2, 0, token.weights);
  EXPECT_NEAR(loss.loss.item<double>(), -0.1369883626902114, 1e-6);
}

}  // namespace
}  // namespace keel
