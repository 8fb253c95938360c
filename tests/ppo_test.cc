// PPO as an update builder of the actor-learner runtime, without processes: a separate critic is trained beside
// the policy (its value loss falls), written with every checkpoint and restored exactly on resume.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/checkpoint.h"
#include "learner/critic.h"
#include "learner/actor_learner.h"
#include "learner/ppo.h"
#include "learner/train_loop.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

ModelConfig tiny() { return test::tiny_model_config(); }

// Rollouts that depend only on the version: a prompt [BOS, x], four random response tokens; the
// score is 1 for a prompt token x >= 13, else 0, so the value of every state is learnable from x.
// Behaviour log-probs come from the policy as it is when the rollouts are drawn.
class FixedRollouts : public RolloutSource {
 public:
  explicit FixedRollouts(Transformer policy) : policy_(std::move(policy)) {}
  std::vector<wire::Rollout> next(size_t n, uint64_t version) override {
    std::mt19937_64 rng(1234 + version);
    std::uniform_int_distribution<int32_t> tok(3, 23);
    std::vector<wire::Rollout> out(n);
    for (auto& r : out) {
      r.prompt_tokens = {1, tok(rng)};
      for (int j = 0; j < 4; ++j) r.response_tokens.push_back(tok(rng));
      r.score = r.prompt_tokens[1] >= 13 ? 1.0f : 0.0f;
      r.policy_version = version;
      torch::NoGradGuard ng;
      std::vector<int64_t> ids(r.prompt_tokens.begin(), r.prompt_tokens.end());
      ids.insert(ids.end(), r.response_tokens.begin(), r.response_tokens.end());
      auto t = torch::tensor(ids, torch::kLong).unsqueeze(0);
      auto logits = policy_->logits(policy_->hidden({t, {}, {}, {}})).narrow(1, 1, 4);
      auto lp = token_logprobs(logits, t.narrow(1, 2, 4));
      for (int j = 0; j < 4; ++j) r.logprobs.push_back(lp[0][j].item<float>());
    }
    return out;
  }

 private:
  Transformer policy_;
};

struct Run {
  Transformer policy{nullptr}, critic{nullptr};
  std::vector<double> value_loss, explained_variance;
};

// `updates` PPO updates with a separate critic into `dir` (resuming from what is there).
Run run_ppo(const std::string& dir, int64_t updates) {
  torch::manual_seed(0);
  Transformer policy(tiny());
  policy->init_weights(7);
  Transformer reference(tiny());
  reference->init_weights(7);
  auto cc = tiny();
  cc.value_head = true;
  Transformer critic(cc);
  critic->init_weights(9);
  PpoOptions o;
  o.rollouts_per_update = 16;
  o.epochs = 2;
  o.minibatches = 2;
  o.vf_coef = 1.0;
  o.value_clip = 1.0;  // let the critic move by a whole score per update
  FixedRollouts source(policy);
  NullPublisher nowhere;
  PpoUpdateBuilder builder(o, policy, reference, 1, 3);
  builder.use_critic(critic, 10.0);
  TrainOptions t;
  t.steps = updates * o.steps_per_update();
  t.lr = 1e-3;
  t.warmup_steps = 0;
  t.log_every = 1;
  t.eval_every = 0;
  t.checkpoint_every = 0;
  t.keep_checkpoints = 100;
  t.out_dir = dir;
  ActorLearner runtime(t, policy, builder, source, nowhere, "", "");
  runtime.run();
  Run r{policy, critic, {}, {}};
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("train/ppo/value_loss")) r.value_loss.push_back(j["train/ppo/value_loss"].get<double>());
    if (j.contains("ppo/explained_variance")) r.explained_variance.push_back(j["ppo/explained_variance"].get<double>());
  }
  return r;
}

double max_diff(Transformer& a, Transformer& b) { return test::max_parameter_diff(a, b); }

TEST(PpoCritic, SeparateCriticLearnsValuesAndResumesExactly) {
  const auto dir = test::temp_dir("ppo_critic_full");
  auto full = run_ppo(dir, 10);
  ASSERT_EQ(full.value_loss.size(), 40u);
  // The critic learns the score: its value loss in the last update is well below the first.
  const double first = (full.value_loss[0] + full.value_loss[1]) / 2, last = (full.value_loss[38] + full.value_loss[39]) / 2;
  EXPECT_LT(last, 0.5 * first) << "value loss " << first << " -> " << last;
  ASSERT_EQ(full.explained_variance.size(), 10u);
  EXPECT_LT(full.explained_variance.front(), 0.1);  // a fresh critic knows nothing...
  EXPECT_GT(full.explained_variance.back(), 0.4);   // ...and by update 10 explains most of the returns
  // The policy carries no value head; the critic is its own model, written beside the policy.
  EXPECT_FALSE(full.policy->config().value_head);
  EXPECT_FALSE(full.policy->named_parameters().contains("value_head.weight"));
  ASSERT_TRUE(fs::exists(dir + "/critic/model.safetensors"));
  auto saved = load_model(dir + "/critic");
  EXPECT_EQ(max_diff(saved, full.critic), 0.0);

  // Resume from the checkpoint after update 3 of 10 in a fresh run directory: the same policy and critic.
  const auto part = test::temp_dir("ppo_critic_resumed");
  fs::create_directories(part + "/checkpoints");
  const std::string mid = "step-00000012";
  ASSERT_TRUE(fs::exists(dir + "/checkpoints/" + mid + "/critic/model.safetensors"));
  fs::copy(dir + "/checkpoints/" + mid, part + "/checkpoints/" + mid, fs::copy_options::recursive);
  test::write_text(part + "/checkpoints/latest", mid + "\n");
  auto resumed = run_ppo(part, 10);
  EXPECT_LT(max_diff(resumed.critic, full.critic), 1e-6);
  EXPECT_LT(max_diff(resumed.policy, full.policy), 1e-6);
  // And the critic did move away from its initialisation.
  Transformer init(load_model_config(dir + "/critic"));
  init->init_weights(9);
  EXPECT_GT(max_diff(init, full.critic), 1e-3);
}

TEST(PpoCritic, StartsFromTheRewardModelsNormalisedScore) {
  const auto dir = test::temp_dir("critic_from_rm");
  auto rc = tiny();
  rc.reward_head = true;
  Transformer rm(rc);
  rm->init_weights(4);
  rm->set_reward_norm(2.0, 0.5);
  save_model(dir + "/rm", rm);
  auto critic = load_critic(dir + "/rm", tiny(), "");
  ASSERT_TRUE(critic->config().value_head);
  torch::NoGradGuard ng;
  auto t = torch::randint(3, 24, {2, 7}, torch::kLong);
  auto expected = rm->reward(rm->hidden({t, {}, {}, {}}));
  auto values = critic->value(critic->hidden({t, {}, {}, {}}));
  EXPECT_LT((values - expected).abs().max().item<double>(), 1e-5);  // the RM's score at every token
  EXPECT_GT(expected.abs().max().item<double>(), 0.1);
  // From a plain model the value head starts at zero.
  Transformer plain(tiny());
  plain->init_weights(5);
  save_model(dir + "/plain", plain);
  auto fresh = load_critic(dir + "/plain", tiny(), "");
  EXPECT_EQ(fresh->value(fresh->hidden({t, {}, {}, {}})).abs().max().item<double>(), 0.0);
  // Another vocabulary is refused, naming both sizes.
  auto other = tiny();
  other.vocab_size = 30;
  try {
    load_critic(dir + "/plain", other, "");
    FAIL() << "a critic with another vocabulary must be refused";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("vocabulary of 24 tokens, the policy 30"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace keel
