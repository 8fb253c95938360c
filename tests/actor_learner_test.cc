// The actor-learner runtime and its flow control, without processes:
//  - the credit ledger's decisions on hand-made scenarios (room, freshness, lapse on silence,
//    supersession, delivery), driven by the test's own clock;
//  - the rollout service answering credit requests over a socket, and a frozen actor's credit
//    going to another actor once it is silent;
//  - the runtime's order of work: every update's rollouts asked for at the current version, each
//    version published once, in order, and only after its checkpoint is on disk;
//  - every update's time split into its phases.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "actors/credit_client.h"
#include "core/checkpoint.h"
#include "learner/actor_learner.h"
#include "learner/ppo.h"
#include "learner/rollout_credits.h"
#include "learner/train_state.h"
#include "learner/rollout_service.h"
#include "tests/support/test_support.h"
#include "wire/heartbeat.h"

namespace keel {
namespace {

using Clock = CreditLedger::Clock;

wire::CreditRequest ask(uint64_t version, uint32_t rollouts) {
  static uint64_t id = 0;
  return {++id, version, rollouts};
}

TEST(Credits, GrantsOnlyWhatTheLearnerWillTakeWithinTheWindow) {
  CreditOptions o;
  o.ahead_updates = 1;
  CreditLedger ledger(o, /*max_staleness=*/1);
  const auto t = Clock::now();
  EXPECT_FALSE(ledger.request("actor-0", ask(0, 16), 0, t).granted) << "nothing is granted before the learner asks";
  ledger.set_demand(0, 64, 64);  // collecting update 0: 64 rollouts, plus one update ahead = 128
  int granted = 0;
  for (int i = 0; i < 10; ++i) granted += ledger.request("actor-" + std::to_string(i % 2), ask(0, 16), 0, t).granted;
  EXPECT_EQ(granted, 8);  // 8 x 16 = 128 rollouts in flight, then no more
  EXPECT_EQ(ledger.stats().in_flight_rollouts, 128);
  EXPECT_EQ(ledger.stats().refused_full, 3);  // the two beyond the window and the one before any demand
  // Rollouts that arrived and wait in the queue count against the window like those in flight.
  CreditLedger other(o, 1);
  other.set_demand(0, 64, 64);
  EXPECT_FALSE(other.request("actor-0", ask(0, 16), 128, t).granted);
  EXPECT_TRUE(other.request("actor-0", ask(0, 16), 112, t).granted);  // a batch may overshoot the window
}

TEST(Credits, AnActorBehindTheStalenessBoundIsToldWhichVersionToLoad) {
  CreditOptions o;
  CreditLedger ledger(o, /*max_staleness=*/1);
  const auto t = Clock::now();
  ledger.set_demand(3, 64, 64);
  // Taken at version 3: weights of version 2 or later are fresh enough.
  auto g = ledger.request("actor-0", ask(1, 16), 0, t);
  EXPECT_FALSE(g.granted);
  EXPECT_EQ(g.min_version, 2u);
  EXPECT_TRUE(ledger.request("actor-0", ask(2, 16), 0, t).granted);
  // With 64 rollouts ahead, the next batch is taken at version 4: version 2 is too old for it.
  auto late = ledger.request("actor-1", ask(2, 16), 48, t);
  EXPECT_FALSE(late.granted);
  EXPECT_EQ(late.min_version, 3u);
  EXPECT_EQ(ledger.stats().refused_version, 2);
  // Synchronous (max staleness 0): nothing is generated ahead, and only with the newest weights.
  CreditLedger sync(o, 0);
  sync.set_demand(5, 16, 16);
  EXPECT_FALSE(sync.request("actor-0", ask(4, 16), 0, t).granted);
  EXPECT_TRUE(sync.request("actor-0", ask(5, 16), 0, t).granted);
  EXPECT_FALSE(sync.request("actor-1", ask(5, 16), 0, t).granted) << "the update's 16 rollouts are already granted";
}

TEST(Credits, ASilentActorsCreditsLapseAndGoToTheOthers) {
  CreditOptions o;
  o.silent_after_s = 10;
  o.supersede_grace_s = 5;
  CreditLedger ledger(o, 1);
  const auto t0 = Clock::now();
  ledger.set_demand(0, 32, 32);  // window 64
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(ledger.request("frozen", ask(0, 16), 0, t0).granted);
  EXPECT_FALSE(ledger.request("alive", ask(0, 16), 0, t0).granted);
  // Each request of an actor supersedes its older grants after a grace of 5 s (an actor works on
  // one batch at a time; a restarted one asks afresh).
  EXPECT_EQ(ledger.expire(t0 + std::chrono::seconds(4)), 0);
  EXPECT_EQ(ledger.expire(t0 + std::chrono::seconds(6)), 3);
  EXPECT_EQ(ledger.stats().in_flight_rollouts, 16);
  // "alive" is heard at 8 s, "frozen" never again: at 11 s it has been silent past the bound.
  ledger.heard("alive", t0 + std::chrono::seconds(8));
  EXPECT_EQ(ledger.expire(t0 + std::chrono::seconds(9)), 0);
  EXPECT_EQ(ledger.expire(t0 + std::chrono::seconds(11)), 1);
  EXPECT_EQ(ledger.stats().in_flight_rollouts, 0);
  const auto g = ledger.request("alive", ask(0, 16), 0, t0 + std::chrono::seconds(11));
  ASSERT_TRUE(g.granted);
  // Delivery ends a grant; a batch without a known grant is used all the same, and counted.
  ledger.delivered("alive", g.credit_id, t0 + std::chrono::seconds(12));
  ledger.delivered("alive", 999, t0 + std::chrono::seconds(12));
  const auto s = ledger.stats();
  EXPECT_EQ(s.delivered, 1);
  EXPECT_EQ(s.ungranted_batches, 1);
  EXPECT_EQ(s.in_flight_rollouts, 0);
  EXPECT_EQ(s.lapsed, 4);  // three superseded (after their grace) and the last for silence
}

// An actor whose batch was discarded (the shared weights were rewritten under it) asks again while
// its own grant still fills the window: that grant ends after the grace, not after the TTL.
TEST(Credits, AnActorAskingAgainEndsItsOlderGrantAfterTheGrace) {
  CreditOptions o;
  o.supersede_grace_s = 2;
  CreditLedger ledger(o, /*max_staleness=*/0);  // synchronous: the window is the update's 16 rollouts
  ledger.set_demand(0, 16, 16);
  const auto t0 = Clock::now();
  ASSERT_TRUE(ledger.request("actor-0", ask(0, 16), 0, t0).granted);
  EXPECT_FALSE(ledger.request("actor-0", ask(0, 16), 0, t0 + std::chrono::milliseconds(100)).granted);
  ledger.heard("actor-0", t0 + std::chrono::seconds(2));
  EXPECT_EQ(ledger.expire(t0 + std::chrono::seconds(3)), 1);
  EXPECT_TRUE(ledger.request("actor-0", ask(0, 16), 0, t0 + std::chrono::seconds(3)).granted);
}

TEST(Credits, TheRolloutServiceGrantsOverItsSocketAndAFrozenActorLosesItsCredit) {
  RolloutServiceOptions o = test::inproc_rollout_service("cr");
  o.peer_timeout_s = 1.0;
  ReplayOptions replay;
  replay.max_staleness = 1;
  RolloutService service(o, replay);
  CreditClient frozen(o.chunks_endpoint, "actor-0"), alive(o.chunks_endpoint, "actor-1");
  wire::HeartbeatSender heartbeat(o.rollouts_endpoint, "actor-1", std::chrono::milliseconds(200));
  // The learner waits for 32 rollouts of version 0 (window 32 + 32 ahead).
  std::thread learner([&] { service.next(32, 0); });
  std::optional<wire::CreditGrant> g;
  for (int i = 0; i < 50 && !(g && g->granted); ++i) g = frozen.ask(0, 64, 200);  // until the learner has asked
  ASSERT_TRUE(g && g->granted);
  auto refused = alive.ask(0, 32, 1000);
  ASSERT_TRUE(refused);
  EXPECT_FALSE(refused->granted) << "the frozen actor holds the whole window";
  // actor-0 never sends anything again; after peer_timeout its credit lapses and actor-1 gets one.
  std::optional<wire::CreditGrant> later;
  for (int i = 0; i < 40 && !(later && later->granted); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    later = alive.ask(0, 32, 500);
  }
  ASSERT_TRUE(later && later->granted) << "a silent actor's credit must go to the others";
  EXPECT_GE(service.stats().credits.lapsed, 1);
  // actor-1 delivers its batch under the credit: the learner's wait ends.
  wire::RolloutBatch b;
  b.credit_id = later->credit_id;
  b.group_size = 1;
  for (int i = 0; i < 32; ++i) {
    wire::Rollout r;
    r.group_id = static_cast<uint64_t>(i);
    r.prompt_tokens = {1, 5};
    r.response_tokens = {6};
    r.logprobs = {-1.0f};
    b.rollouts.push_back(r);
  }
  auto push = wire::zmq_connect(wire::SocketKind::kPush, o.rollouts_endpoint);
  wire::send_message(*push, {"actor-1", b});
  learner.join();
  EXPECT_EQ(service.stats().credits.delivered, 1);
  EXPECT_EQ(service.replay_stats().taken, 32);
  service.stop();
}

ModelConfig tiny() { return test::tiny_model_config(); }
Transformer seeded(uint64_t seed) {
  Transformer m(tiny());
  m->init_weights(seed);
  return m;
}

// Rollouts with random tokens and a score of the prompt's parity; records the versions asked for.
class RecordingSource : public RolloutSource {
 public:
  std::vector<wire::Rollout> next(size_t n, uint64_t version) override {
    asked.emplace_back(n, version);
    std::mt19937_64 rng(version);
    std::uniform_int_distribution<int32_t> tok(3, 23);
    std::vector<wire::Rollout> out(n);
    for (size_t i = 0; i < n; ++i) {
      auto& r = out[i];
      r.prompt_tokens = {1, tok(rng)};
      r.response_tokens = {tok(rng), tok(rng)};
      r.logprobs = {-3.0f, -3.0f};
      r.score = static_cast<float>(r.prompt_tokens[1] % 2);
      r.policy_version = version;
      r.group_id = i / 2;
    }
    return out;
  }
  std::vector<std::pair<size_t, uint64_t>> asked;
};

// Notes each publication and whether the checkpoint of the steps before it was on disk then.
class RecordingPublisher : public WeightPublisher {
 public:
  explicit RecordingPublisher(std::string dir) : dir_(std::move(dir)) {}
  void publish_tensors(uint64_t version, const TensorMap& policy) override {
    versions.push_back(version);
    checkpointed_step.push_back(latest_checkpoint(dir_));
    weights.push_back({});
    for (const auto& [k, t] : policy) weights.back()[k] = t.clone();
  }
  std::vector<uint64_t> versions;
  std::vector<std::string> checkpointed_step;
  std::vector<TensorMap> weights;  // what each publication carried

 private:
  std::string dir_;
};

// GRPO on groups of 2, 8 rollouts an update in 2 minibatches; the runtime's tests train 3 updates.
PpoOptions grpo_pairs() {
  PpoOptions o;
  o.estimator = AdvantageEstimator::kGrpo;
  o.group_size = 2;
  o.rollouts_per_update = 8;
  o.minibatches = 2;
  return o;
}
TrainOptions three_updates(const PpoOptions& o, const std::string& dir) {
  TrainOptions t;
  t.steps = 3 * o.steps_per_update();
  t.warmup_steps = 0;
  t.eval_every = 0;
  t.checkpoint_every = 0;
  t.out_dir = dir;
  return t;
}

// A learner waiting for rollouts of a version that will never be published (its checkpoint's
// background write failed) stops with the reason instead of waiting forever.
TEST(RolloutServiceAbort, AWaitForRolloutsEndsWithTheReason) {
  RolloutServiceOptions o = test::inproc_rollout_service("ab");
  ReplayOptions replay;
  replay.max_staleness = 0;
  RolloutService service(o, replay);
  std::thread failing([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    service.abort("a checkpoint written in the background failed: disk full");
  });
  const auto t0 = std::chrono::steady_clock::now();
  const auto error = test::keel_error_of([&] { service.next(8, 3); });
  failing.join();
  EXPECT_EQ(error, "a checkpoint written in the background failed: disk full");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

// Written at once or in the background (then the writer's thread publishes), each version goes
// out once, after its checkpoint is the one a resume would start from.
class PublishesAfterCheckpoint : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(ActorLearner, PublishesAfterCheckpoint, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "InTheBackground" : "AtOnce"; });

TEST_P(PublishesAfterCheckpoint, CollectsAtTheCurrentVersionAndPublishesEachVersionOnceAfterItsCheckpoint) {
  const auto dir = test::temp_dir(std::string("actor_learner_order") + (GetParam() ? "_bg" : ""));
  Transformer policy = seeded(3), reference = seeded(3);
  PpoOptions o = grpo_pairs();
  o.epochs = 1;
  PpoUpdateBuilder builder(o, policy, reference, 1, 5);
  RecordingSource source;
  RecordingPublisher publisher(dir);
  TrainOptions t = three_updates(o, dir);
  t.lr = 1e-3;
  t.background_checkpoints = GetParam();
  t.keep_checkpoints = 5;
  ActorLearner runtime(t, policy, builder, source, publisher, "", "");
  const auto r = runtime.run();
  EXPECT_EQ(r.final_step, 6);
  EXPECT_EQ(runtime.version(), 3u);
  const std::vector<std::pair<size_t, uint64_t>> asked{{8, 0}, {8, 1}, {8, 2}};
  EXPECT_EQ(source.asked, asked);
  EXPECT_EQ(publisher.versions, (std::vector<uint64_t>{0, 1, 2, 3}));
  // Version v (v = 1, 2) went out once the checkpoint after its update's 2 steps was the latest.
  ASSERT_EQ(publisher.checkpointed_step.size(), 4u);
  EXPECT_EQ(publisher.checkpointed_step[0], "");
  EXPECT_NE(publisher.checkpointed_step[1].find("step-00000002"), std::string::npos) << publisher.checkpointed_step[1];
  EXPECT_NE(publisher.checkpointed_step[2].find("step-00000004"), std::string::npos) << publisher.checkpointed_step[2];
  EXPECT_NE(publisher.checkpointed_step[3].find("step-00000006"), std::string::npos) << publisher.checkpointed_step[3];
  // Each published version carries the weights its checkpoint holds (not the policy trained on since).
  for (size_t v = 1; v <= 3; ++v) {
    const auto saved = load_safetensors(model_weights_path(checkpoint_dir(dir, 2 * static_cast<int64_t>(v))));
    for (const auto& [k, t] : saved) EXPECT_TRUE(torch::equal(t, publisher.weights[v].at(k))) << "version " << v << " " << k;
  }
  EXPECT_FALSE(
      torch::equal(publisher.weights[1].at("transformer.wte.weight"), publisher.weights[2].at("transformer.wte.weight")));
  // A builder refuses an update it was not given enough rollouts for.
  PpoUpdateBuilder lacking(o, policy, reference, 1, 5);
  lacking.add(source.next(3, 0), 0);
  EXPECT_EQ(lacking.rollouts_wanted(), 5);
  EXPECT_NE(test::keel_error_of([&] { lacking.prepare(0, policy); }).find("needs 8 rollouts, it was given 3"), std::string::npos);
}

// A builder that checkpoints only every checkpoint_every steps (as online DPO does) publishes from
// the runtime's thread while a checkpoint written in the background may still be on its way (and
// then publishing): versions still go out once each, in order.
class CheckpointsWhenDue : public PpoUpdateBuilder {
 public:
  using PpoUpdateBuilder::PpoUpdateBuilder;
  bool checkpoint_each_update() const override { return false; }
};
class SlowVersionTwo : public RecordingPublisher {
 public:
  using RecordingPublisher::RecordingPublisher;
  void publish_tensors(uint64_t version, const TensorMap& policy) override {
    if (version == 2) std::this_thread::sleep_for(std::chrono::milliseconds(400));
    RecordingPublisher::publish_tensors(version, policy);
  }
};

TEST(ActorLearner, APublicationWaitsForOneABackgroundCheckpointMakes) {
  const auto dir = test::temp_dir("actor_learner_due");
  Transformer policy = seeded(3), reference = seeded(3);
  PpoOptions o = grpo_pairs();
  o.epochs = 1;
  CheckpointsWhenDue builder(o, policy, reference, 1, 5);
  RecordingSource source;
  SlowVersionTwo publisher(dir);
  TrainOptions t = three_updates(o, dir);
  t.steps = 4 * o.steps_per_update();
  t.checkpoint_every = 2 * o.steps_per_update();  // after updates 2 (in the background) and 4 (the end)
  t.background_checkpoints = true;
  ActorLearner(t, policy, builder, source, publisher, "", "").run();
  EXPECT_EQ(publisher.versions, (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  ASSERT_EQ(publisher.checkpointed_step.size(), 5u);
  EXPECT_NE(publisher.checkpointed_step[2].find("step-00000004"), std::string::npos) << publisher.checkpointed_step[2];
}

// Waits `delay` before handing out the recording source's rollouts, or before each publication.
class SlowSource : public RecordingSource {
 public:
  std::vector<wire::Rollout> next(size_t n, uint64_t version) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(60));
    return RecordingSource::next(n, version);
  }
};
class SlowPublisher : public WeightPublisher {
 public:
  void publish_tensors(uint64_t, const TensorMap&) override { std::this_thread::sleep_for(std::chrono::milliseconds(40)); }
};

TEST(ActorLearner, EveryUpdateLogsTheSecondsOfEachPhase) {
  const auto dir = test::temp_dir("actor_learner_phases");
  Transformer policy = seeded(3), reference = seeded(3);
  const PpoOptions o = grpo_pairs();
  PpoUpdateBuilder builder(o, policy, reference, 1, 5);
  SlowSource source;
  SlowPublisher publisher;
  const TrainOptions t = three_updates(o, dir);
  ActorLearner(t, policy, builder, source, publisher, "", "").run();
  std::ifstream f(dir + "/metrics.jsonl");
  int updates = 0;
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("ppo/version")) continue;
    ++updates;
    auto phase = [&](const std::string& name) { return j.value("ppo/time/" + name, -1.0); };
    EXPECT_GE(phase("wait_rollouts"), 0.06) << line;
    EXPECT_GE(phase("publish"), 0.04) << "the publication that began the update: " << line;
    for (const char* name : {"prepare", "prepare/reference_logp", "prepare/proximal_logp", "prepare/advantages", "batch",
                             "forward_backward", "optimizer", "checkpoint"})
      EXPECT_GT(phase(name), 0.0) << name << ": " << line;
    EXPECT_LE(phase("prepare/reference_logp") + phase("prepare/proximal_logp"), phase("prepare")) << line;
    double phases = 0;
    for (const char* name :
         {"publish", "eval", "wait_rollouts", "prepare", "batch", "forward_backward", "optimizer", "checkpoint"})
      phases += phase(name);
    EXPECT_LE(phases, phase("cycle") + 1e-6) << "the phases do not overlap: " << line;
    EXPECT_NEAR(phases + phase("other"), phase("cycle"), 1e-6) << line;
  }
  EXPECT_EQ(updates, 3);
}

}  // namespace
}  // namespace keel
