// Learning on the embedded default, through the keel binary as a user runs it: pretraining on the
// fortunes corpus (Debian package "fortunes") brings held-out loss clearly below the corpus's
// unigram cross-entropy; SFT on the built-in tasks reaches stated held-out exact-match accuracies
// per family; a reward model, DPO, PPO, GRPO, RLOO and online DPO each move what they should from
// that SFT model (tests/learning_fixture.h). The runs under faults are learning_faults_test.cc.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/tasks.h"
#include "replay/preference_buffer.h"
#include "tests/learning_fixture.h"
#include "tests/ppo_support.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

using namespace learning;

TEST(Learning, PretrainBeatsUnigramAndSftLearnsTheTasks) {
  ASSERT_TRUE(std::filesystem::exists(kCorpus)) << "the default corpus is missing: run scripts/setup.sh (package fortunes)";
  const auto& p = sft_pipeline();
  ASSERT_TRUE(p.failure.empty()) << p.failure;
  const std::string& dir = p.dir;
  ASSERT_GT(p.unigram, 5.0);
  std::cerr << "unigram cross-entropy " << p.unigram << " nats/token; pretrained held-out loss " << p.pre_loss << "\n";
  EXPECT_LT(p.pre_loss, p.unigram - 0.8);  // measured: 5.70 against 6.80

  const auto before = eval_tasks(dir + "/pre/model", dir + "/pre_tasks.json");
  const auto& after = sft_task_accuracy();
  // Stated bars per family; measured on 2 cores: arithmetic 0.27, count 1.00, reverse 0.97, sort 0.94
  // after SFT, and 0.00 for every family before it.
  const std::map<std::string, double> bar = {{"arithmetic", 0.15}, {"count", 0.9}, {"reverse", 0.8}, {"sort", 0.6}};
  for (const auto& [fam, min_acc] : bar) {
    const double a = after["accuracy"][fam].get<double>(), b = before["accuracy"][fam].get<double>();
    EXPECT_GE(a, min_acc) << fam;
    EXPECT_LE(b, min_acc / 3) << fam << ": SFT must be far above the pretrained model";
  }
}

// On-policy negatives: `keel tasks export --pairs --wrong sampled` takes the SFT model's own wrong
// answers as the rejected side (a near miss where all its draws were right).
TEST(Learning, TaskPairsWithTheModelsOwnWrongAnswers) {
  SFT_MODEL_OR_FAIL(sft);
  const std::string dir = test::temp_dir("sampled_pairs");
  auto r = test::keel("tasks export --pairs --wrong sampled --model " + sft +
                      " --samples 2 --split train --per-family 25 --out " + dir + "/pairs.jsonl");
  ASSERT_EQ(r.code, 0) << r.output;
  int found = -1, total = -1;
  const auto at = r.output.find(" prompts got a sampled wrong answer");
  ASSERT_NE(at, std::string::npos) << r.output;
  std::istringstream(r.output.substr(r.output.rfind('\n', at) + 1)) >> found;
  std::istringstream(r.output.substr(r.output.find(" of ", r.output.rfind('\n', at) + 1) + 4)) >> total;
  EXPECT_EQ(total, 100);
  EXPECT_GE(found, 10) << "the SFT model errs on more than a tenth of the prompts when sampling";
  std::ifstream f(dir + "/pairs.jsonl");
  std::string line;
  int rows = 0;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_TRUE(check_task(j["prompt"], j["chosen"])) << line;
    EXPECT_FALSE(check_task(j["prompt"], j["rejected"])) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 100);
}

// Preference learning on the built-in tasks (the right answer against a wrong one), from the SFT
// model above: a reward model reaches 90% held-out pairwise accuracy (random wrong answers, 4000
// pairs, 400 steps; measured 0.9225); DPO (reference log-probs cached in the buffer; near-miss and
// random wrong answers; beta 0.05, lr 2e-5, RPO weight 1, 300 steps) lifts held-out preference
// accuracy from 50% to 85% (measured 0.8775) and greedy arithmetic accuracy, the family where the
// SFT model errs most, above the SFT model's (measured 0.27 -> 0.32; 0.33 and 0.34 with 200 steps
// at lr 1e-5 and 2e-5) while the mean over the families stays within noise of it (0.795 -> 0.78:
// sort and reverse lose 0.04-0.05; the default job's wider model rose, 0.80 -> 0.825). A buffer
// written by h5py alone trains in keel dpo.
TEST(Learning, RewardModelAndDpoOnTaskPairs) {
  SFT_MODEL_OR_FAIL(sft);
  const std::string dir = test::temp_dir("preferences");
  for (const char* wrong : {"random", "mixed"}) {
    ASSERT_EQ(test::keel(std::string("tasks export --pairs --wrong ") + wrong +
                         " --split train --per-family 1000 --seed 2 --out " + dir + "/train_" + wrong + ".jsonl")
                  .code,
              0);
    ASSERT_EQ(test::keel(std::string("tasks export --pairs --wrong ") + wrong +
                         " --split held-out --per-family 100 --seed 2 --out " + dir + "/held_" + wrong + ".jsonl")
                  .code,
              0);
  }
  for (const char* split : {"train_random", "held_random", "train_mixed", "held_mixed"}) {
    auto r = test::keel(std::string("prefs import --input ") + dir + "/" + split + ".jsonl --tokenizer " + sft + " --out " + dir +
                        "/" + split + ".h5");
    ASSERT_EQ(r.code, 0) << r.output;
  }
  auto r = test::keel("prefs inspect --buffer " + dir + "/held_mixed.h5 --show 1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("pairs: 400"), std::string::npos) << r.output;

  r = test::keel("reward train --init " + sft + " --train " + dir + "/train_random.h5 --eval-buffer " + dir +
                 "/held_random.h5 --out " + dir +
                 "/rm --steps 400 --batch-size 16 --lr 2e-4 --warmup-steps 30 --eval-every 400 --log-every 100 --normalize");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto rm_acc = metric_values(dir + "/rm", "eval/accuracy");
  ASSERT_FALSE(rm_acc.empty());
  std::cerr << "reward model held-out pairwise accuracy " << rm_acc.back() << "\n";
  EXPECT_GE(rm_acc.back(), 0.9);  // measured 0.915 in every run so far (the pipeline is deterministic)
  const auto cfg = nlohmann::json::parse(test::read_text(dir + "/rm/model/config.json"));
  EXPECT_TRUE(cfg["keel"]["reward_head"].get<bool>());
  EXPECT_NE(cfg["keel"]["reward_norm"]["gain"].get<double>(), 1.0) << "--normalize must store a fitted gain";

  r = test::keel("dpo --init " + sft + " --train " + dir + "/train_mixed.h5 --eval-buffer " + dir +
                 "/held_mixed.h5 --precompute-ref");
  ASSERT_EQ(r.code, 0) << r.output;
  r = test::keel("prefs inspect --buffer " + dir + "/train_mixed.h5 --show 0");
  EXPECT_NE(r.output.find("reference log-probs: yes"), std::string::npos) << r.output;
  r = test::keel("dpo --init " + sft + " --train " + dir + "/train_mixed.h5 --eval-buffer " + dir + "/held_mixed.h5 --out " +
                 dir +
                 "/dpo --steps 300 --batch-size 16 --lr 2e-5 --beta 0.05 --sft-weight 1.0 --eval-at-start true"
                 " --eval-every 300 --log-every 50");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("reference log-probs from the buffer cache"), std::string::npos) << r.output;
  const auto acc = metric_values(dir + "/dpo", "eval/accuracy");
  ASSERT_GE(acc.size(), 2u);
  std::cerr << "DPO held-out preference accuracy " << acc.front() << " -> " << acc.back() << "\n";
  EXPECT_NEAR(acc.front(), 0.5, 0.1) << "the policy equals its reference at the start: implicit rewards are 0";
  EXPECT_GE(acc.back(), 0.85);
  const auto& sft_tasks = sft_task_accuracy();
  const auto dpo_tasks = eval_tasks(dir + "/dpo/model", dir + "/dpo_tasks.json");
  const double arith_sft = sft_tasks["accuracy"]["arithmetic"].get<double>(),
               arith_dpo = dpo_tasks["accuracy"]["arithmetic"].get<double>();
  std::cerr << "held-out task accuracy: SFT " << mean_accuracy(sft_tasks) << ", DPO " << mean_accuracy(dpo_tasks)
            << "; arithmetic " << arith_sft << " -> " << arith_dpo << "\n";
  EXPECT_GE(arith_dpo, arith_sft + 0.02) << "DPO must raise held-out arithmetic accuracy above the SFT model's";
  EXPECT_GE(mean_accuracy(dpo_tasks), mean_accuracy(sft_tasks) - 0.04) << "DPO lost the SFT model's task accuracy";

  // A buffer written by h5py alone (int64 tokens, no text, no cache) trains in keel dpo.
  r = test::run(
      "/usr/bin/python3 " + test::source_dir() + "/tests/reference/preference_h5.py dump " + dir + "/held_mixed.h5 > " + dir +
      "/held.json && /usr/bin/python3 -c " +
      test::shell_quote("import json,sys; d=json.load(open(sys.argv[1])); json.dump(d['pairs'], open(sys.argv[2],'w'))") + " " +
      dir + "/held.json " + dir + "/pairs.json && /usr/bin/python3 " + test::source_dir() +
      "/tests/reference/preference_h5.py write " + dir + "/py.h5 " + dir + "/pairs.json");
  ASSERT_EQ(r.code, 0) << r.output;
  r = test::keel("dpo --init " + sft + " --train " + dir + "/py.h5 --eval-pairs 40 --out " + dir +
                 "/dpo_py --steps 2 --log-every 1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("360 training pairs"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("computed on the fly"), std::string::npos) << r.output;
}

// PPO through `keel launch` (reward service, learner and an actor as separate processes) from the
// SFT model of the test above, on the sort family, every rollout logged (the actor samples 2
// responses per prompt). What holds and is asserted: every update is made and published once
// (versions 1..60, no gaps or repeats), the KL to the reference stays in its band, the sampled
// held-out reward does not fall, and the exact held-out expected reward rises by the margin below.
// The faults (bad messages, killed actors, reward service and learner) are the chaos test's.
TEST(Learning, PpoThroughLaunchWithOneActor) {
  SFT_MODEL_OR_FAIL(sft);
  const auto& o = logged_ppo_run();
  const auto& r = o.result;
  ASSERT_EQ(r.code, 0) << r.output;
  const auto run = test::read_ppo_run(o.dir + "/learner/metrics.jsonl");
  ASSERT_GE(run.eval_reward.size(), 2u) << r.output;
  ASSERT_EQ(run.version.size(), 60u);
  for (size_t i = 0; i < run.version.size(); ++i) EXPECT_EQ(run.version[i], static_cast<double>(i + 1));  // no gaps or repeats
  const double before = run.eval_reward.front(), after = run.eval_reward.back();
  ASSERT_EQ(run.expected.size(), run.eval_reward.size());
  const double expected_before = run.expected.front(), expected_after = run.expected.back();
  std::cerr << "PPO: held-out sort reward " << before << " -> " << after << " (sampled, 800 draws), expected reward "
            << expected_before << " -> " << expected_after << "\n";
  // The held-out mean reward, exactly: the probability of sampling the right answer to each of 200
  // held-out sort prompts (no sampling noise). It agrees with the sampled rate (800 draws, standard
  // error about 0.016). Measured over 60 updates of 64 rollouts: 0.776 -> 0.802 (+0.025; on the
  // default job's wider model +0.017 to +0.034); asserted: +0.005.
  EXPECT_NEAR(expected_before, before, 0.05) << "expected reward and sampled exact match disagree";
  EXPECT_GE(expected_after, expected_before + 0.005) << "the held-out reward must rise within 60 updates";
  EXPECT_GE(after, before - 0.03) << "the sampled held-out reward fell";
  for (double kl : run.kl) EXPECT_LT(kl, 2.0) << "KL to the reference left its band";
}

// Pairs mined from the logged PPO run above (2 responses per prompt, best against worst) train a
// DPO policy whose held-out reward (exact match of sampled responses at temperature 1, the reward
// PPO optimised) is above the SFT model's, and whose greedy accuracy does not fall.
// Measured: sampled 0.766 -> 0.825, greedy 0.90 -> 0.915 (800 samples / 200 prompts).
TEST(Learning, DpoOnPairsMinedFromALoggedPpoRun) {
  SFT_MODEL_OR_FAIL(sft);
  const auto& logged = logged_ppo_run();
  ASSERT_EQ(logged.result.code, 0) << logged.result.output;
  const std::string log = logged.dir + "/rollouts.h5";
  const std::string dir = test::temp_dir("mined");
  auto r = test::keel("prefs mine --log " + log + " --out " + dir + "/mined.h5");
  ASSERT_EQ(r.code, 0) << r.output;
  std::cerr << r.output;
  PreferenceReader mined(dir + "/mined.h5");
  ASSERT_GE(mined.size(), 50) << "too few pairs mined from the rollout log";
  for (const auto& p : mined.read(0, mined.size())) ASSERT_GT(p.chosen_reward, p.rejected_reward);
  r = test::keel("dpo --init " + sft + " --train " + dir + "/mined.h5 --eval-pairs 0 --out " + dir +
                 "/dpo --steps 150 --batch-size 8 --lr 1e-5 --beta 0.05 --sft-weight 1.0 --log-every 50");
  ASSERT_EQ(r.code, 0) << r.output;
  auto reward = [&](const std::string& model, const std::string& out, const std::string& sampling) {
    auto e = test::keel("eval tasks --model " + model + " --families sort --per-family 200 " + sampling + " --out " + out);
    EXPECT_EQ(e.code, 0) << e.output;
    return nlohmann::json::parse(test::read_text(out))["accuracy"]["sort"].get<double>();
  };
  const std::string sampled = "--temperature 1 --samples 4";
  const double before = reward(sft, dir + "/sft.json", sampled), after = reward(dir + "/dpo/model", dir + "/dpo.json", sampled);
  const double greedy_before = reward(sft, dir + "/sft_greedy.json", ""),
               greedy_after = reward(dir + "/dpo/model", dir + "/dpo_greedy.json", "");
  std::cerr << "held-out sort reward (sampled, exact match): SFT " << before << ", DPO on mined pairs " << after
            << "; greedy accuracy " << greedy_before << " -> " << greedy_after << "\n";
  EXPECT_GT(after, before) << "DPO on mined pairs must raise the held-out reward above the SFT model's";
  EXPECT_GE(greedy_after, greedy_before - 0.02);
}

// Online DPO as a mode of the actor-learner loop (`keel launch --learner dpo-online`) on arithmetic,
// the family with the most headroom: actors sample 8 responses for each prompt, the learner mines
// best-against-worst pairs from fresh groups (32 per step), trains and publishes every step.
// Asserted: every step is published once, the mined pairs (kept in a preference buffer) are
// ordered by score, and the exact held-out expected reward rises by the margin.
TEST(Learning, OnlineDpoRaisesTheHeldOutArithmeticReward) {
  SFT_MODEL_OR_FAIL(sft);
  const std::string dir = test::temp_dir("online_dpo");
  auto r = test::keel("launch --out " + dir + " --init " + sft + " --learner dpo-online --actors 2 --base-port " +
                      std::to_string(test::free_port_block(6)) +
                      " --ppo-args '--updates 60 --pairs-per-step 32 --group-size 8 --eval-every 60 --eval-per-family 100"
                      " --eval-samples 4 --eval-families arithmetic --lr 5e-5 --beta 0.1 --sft-weight 1.0 --pairs-out " +
                      dir + "/pairs.h5'" + " --actor-args '--batch-prompts 8 --families arithmetic'");
  ASSERT_EQ(r.code, 0) << r.output;
  std::vector<double> versions, expected;
  std::ifstream f(dir + "/learner/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("online/version")) versions.push_back(j["online/version"].get<double>());
    if (j.contains("eval/expected_reward")) expected.push_back(j["eval/expected_reward"].get<double>());
  }
  ASSERT_EQ(versions.size(), 60u);
  for (size_t i = 0; i < versions.size(); ++i) EXPECT_EQ(versions[i], static_cast<double>(i + 1));
  PreferenceReader pairs(dir + "/pairs.h5");
  EXPECT_GE(pairs.size(), 60 * 16);  // 32 a step unless a step gave up waiting for untied groups
  for (const auto& p : pairs.read(0, pairs.size())) ASSERT_GT(p.chosen_reward, p.rejected_reward);
  ASSERT_EQ(expected.size(), 2u);
  std::cerr << "online DPO: " << pairs.size() << " pairs mined; held-out arithmetic expected reward " << expected.front()
            << " -> " << expected.back() << "\n";
  // Measured from 0.215 with these settings: +0.044 (lr 2e-5 gave +0.027; on the default job's wider
  // model, from 0.398, +0.072 and +0.074 at lr 2e-5). Asserted at about 45% of it.
  EXPECT_GE(expected.back(), expected.front() + 0.02) << "online DPO must raise the held-out reward within 60 steps";
}

// The group methods on arithmetic, the family with the most headroom (the SFT model's greedy
// accuracy 0.27, expected reward 0.215, pass@8 0.78): 2 actors sample 8 responses for
// each of 32 prompts per update, the learner takes one step on the 256 rollouts. Asserted: every
// update is published once, the KL stays in its band, and the exact held-out expected reward (the
// probability of sampling the right answer to 100 held-out prompts) rises by the case's margin.
struct GroupMethodCase {
  std::string estimator;
  double margin;  // least rise of the held-out expected reward over kGroupUpdates updates
};
constexpr int kGroupUpdates = 20;

void check_group_method(const GroupMethodCase& c, const std::string& sft) {
  const std::string dir = test::temp_dir(c.estimator);
  const std::string updates = std::to_string(kGroupUpdates);
  auto r = test::keel("launch --out " + dir + " --init " + sft + " --actors 2 --base-port " +
                      std::to_string(test::free_port_block(6)) + " --ppo-args '--estimator " + c.estimator +
                      " --group-size 8 --updates " + updates + " --rollouts-per-update 256 --epochs 1 --minibatches 1" +
                      " --lr 2e-5 --kl-coef 0.04 --eval-every " + updates +
                      " --eval-per-family 100 --eval-samples 4 --eval-families arithmetic'" +
                      " --actor-args '--batch-prompts 8 --families arithmetic'");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto run = test::read_ppo_run(dir + "/learner/metrics.jsonl");
  ASSERT_EQ(run.version.size(), static_cast<size_t>(kGroupUpdates)) << r.output;
  for (size_t i = 0; i < run.version.size(); ++i) EXPECT_EQ(run.version[i], static_cast<double>(i + 1));
  ASSERT_EQ(run.expected.size(), 2u) << r.output;
  std::cerr << c.estimator << ": held-out arithmetic expected reward " << run.expected.front() << " -> " << run.expected.back()
            << " in " << kGroupUpdates << " updates\n";
  EXPECT_GE(run.expected.back(), run.expected.front() + c.margin)
      << c.estimator << " must raise the held-out reward by " << c.margin << " within " << kGroupUpdates << " updates";
  for (double kl : run.kl) EXPECT_LT(kl, 2.0) << "KL to the reference left its band";
}

TEST(Learning, GrpoRaisesTheHeldOutArithmeticReward) {
  SFT_MODEL_OR_FAIL(sft);
  // Measured (20 updates, from 0.215): +0.013 at lr 2e-5 (+0.013 over 30 updates), +0.012 at 1e-5.
  // This half-width model wants a small step: lr 5e-5 gave +0.001, 1e-4 -0.002, 3e-4 -0.039 (the
  // training score fell from 0.31 to 0.16 in 8 updates while the KL reached 1.2), where the default
  // job's model gained +0.027 to +0.036 at 1e-4 (bench/rl_algorithms.md). Asserted: +0.005.
  check_group_method({"grpo", 0.005}, sft);
}
TEST(Learning, RlooRaisesTheHeldOutArithmeticReward) {
  SFT_MODEL_OR_FAIL(sft);
  // Measured (20 updates, from 0.215): +0.012 at lr 2e-5; +0.004 at 5e-5, -0.033 at 3e-4. Asserted:
  // +0.005.
  check_group_method({"rloo", 0.005}, sft);
}

}  // namespace
}  // namespace keel
