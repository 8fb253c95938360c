// Learning on the embedded default, through the keel binary as a user runs it:
// pretraining on the fortunes corpus (Debian package "fortunes") brings held-out loss clearly
// below the corpus's unigram cross-entropy; SFT on the built-in tasks then reaches stated
// held-out exact-match accuracies per family, far above the pretrained model's.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/tasks.h"
#include "replay/preference_buffer.h"
#include "replay/rollout_log.h"
#include "tests/ppo_support.h"
#include "tests/support/test_support.h"
#include "wire/channel.h"

namespace keel {
namespace {

constexpr const char* kCorpus = "/usr/share/games/fortunes";

double last_eval_loss(const std::string& run) {
  double loss = -1;
  std::istringstream is(test::read_text(run + "/metrics.jsonl"));
  std::string line;
  while (std::getline(is, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval/loss")) loss = j["eval/loss"].get<double>();
  }
  return loss;
}

double unigram_baseline(const std::string& output) {
  const std::string key = "unigram cross-entropy of val under train (nats/token): ";
  const auto at = output.find(key);
  return at == std::string::npos ? -1 : std::stod(output.substr(at + key.size()));
}

nlohmann::json eval_tasks(const std::string& model, const std::string& out) {
  auto r = test::keel("eval tasks --model " + model + " --per-family 100 --out " + out);
  EXPECT_EQ(r.code, 0) << r.output;
  std::cerr << r.output;
  return nlohmann::json::parse(test::read_text(out));
}

// Every value of `key` in a run's metrics.jsonl, in order.
std::vector<double> metric_values(const std::string& run, const std::string& key) {
  std::vector<double> out;
  std::istringstream is(test::read_text(run + "/metrics.jsonl"));
  std::string line;
  while (std::getline(is, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains(key)) out.push_back(j[key].get<double>());
  }
  return out;
}

double mean_accuracy(const nlohmann::json& tasks) {
  double sum = 0;
  for (const auto& [fam, acc] : tasks["accuracy"].items()) sum += acc.get<double>();
  return sum / static_cast<double>(tasks["accuracy"].size());
}

// The pipeline every later test starts from: a tokenizer, the tokenized corpus, a pretrained and
// an SFT model, made once per test process by whichever test needs them first (so that any test
// runs alone: --gtest_filter picks one and it builds what it needs). It is the default job's
// recipe at half its width (d 128 instead of 256), which trains in 7 minutes instead of 12 on 2
// cores and keeps every later run fast; the margins below are measured on this model.
struct SftPipeline {
  std::string dir, failure;  // failure: the first step that failed, with its output
  double unigram = -1, pre_loss = -1;
  std::string sft() const { return dir + "/sft/model"; }
};

SftPipeline build_sft_pipeline() {
  SftPipeline p;
  p.dir = test::temp_dir("learning");
  const std::string& dir = p.dir;
  auto step = [&](const std::string& args) {
    auto r = test::keel(args);
    if (r.code != 0 && p.failure.empty()) p.failure = "keel " + args + " failed:\n" + r.output;
    return r;
  };
  step(std::string("tokenizer train --input ") + kCorpus + " --doc-separator % --vocab-size 4096 --out " + dir + "/tok");
  auto r = step(std::string("data tokenize --input ") + kCorpus + " --doc-separator % --tokenizer " + dir + "/tok.model --out " +
                dir + "/data");
  p.unigram = unigram_baseline(r.output);
  step("pretrain --data " + dir + "/data --tokenizer " + dir + "/tok.model --out " + dir +
       "/pre --d-model 128 --n-layer 4 --n-head 4 --seq-len 256 --batch-size 8 --steps 300 --lr 2e-3"
       " --warmup-steps 30 --eval-every 100 --checkpoint-every 100 --log-every 50");
  if (p.failure.empty()) p.pre_loss = last_eval_loss(dir + "/pre");
  step("tasks export --split train --per-family 4000 --out " + dir + "/train.jsonl");
  step("tasks export --split held-out --per-family 50 --out " + dir + "/held.jsonl");
  step("sft --init " + dir + "/pre/model --train-file " + dir + "/train.jsonl --eval-file " + dir + "/held.jsonl --out " + dir +
       "/sft --seq-len 128 --batch-size 16 --steps 1000 --lr 1.5e-3"
       " --warmup-steps 30 --eval-every 500 --checkpoint-every 500 --log-every 100");
  return p;
}

const SftPipeline& sft_pipeline() {
  static const SftPipeline p = build_sft_pipeline();
  return p;
}

// The SFT model's greedy held-out task accuracy (eval tasks, 100 per family), evaluated once.
const nlohmann::json& sft_task_accuracy() {
  static const nlohmann::json j = eval_tasks(sft_pipeline().sft(), sft_pipeline().dir + "/sft_tasks.json");
  return j;
}

// The SFT model's directory; fails the calling test when the pipeline did not finish.
#define SFT_MODEL_OR_FAIL(var)                                     \
  const auto& var##_built = sft_pipeline();                        \
  ASSERT_TRUE(var##_built.failure.empty()) << var##_built.failure; \
  const std::string var = var##_built.sft()

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

}  // namespace
}  // namespace keel

namespace keel {
namespace {

// PPO through `keel launch` (reward service, learner and an actor as separate processes) from the
// SFT model of the test above, on the sort family, every rollout logged (the actor samples 2
// responses per prompt). What holds and is asserted: every update is made and published once
// (versions 1..60, no gaps or repeats), the KL to the reference stays in its band, the sampled
// held-out reward does not fall, and the exact held-out expected reward rises by the margin below.
// The faults (bad messages, killed actors, reward service and learner) are the chaos test's.
struct PpoOutcome {
  std::string dir;
  test::RunResult result;
};

// The run and its rollout log, which later tests compare with or mine. Run once per process.
const PpoOutcome& logged_ppo_run() {
  static const PpoOutcome o = [] {
    const std::string dir = test::temp_dir("ppo_logged");
    const std::string cmd = "launch --out " + dir + " --init " + sft_pipeline().sft() + " --actors 1 --base-port " +
                            std::to_string(test::free_port_block(6)) +
                            " --ppo-args '--updates 60 --rollouts-per-update 64 --epochs 1 --minibatches 1 --eval-every 60"
                            " --eval-per-family 200 --eval-samples 4 --eval-families sort --lr 5e-5 --kl-coef 0.02"
                            " --rollout-log " +
                            dir + "/rollouts.h5' --actor-args '--batch-prompts 16 --families sort --group-size 2'";
    return PpoOutcome{dir, test::keel(cmd)};
  }();
  return o;
}

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

}  // namespace
}  // namespace keel

namespace keel {
namespace {

// Multi-host PPO on one machine: network namespaces the test creates (a bridge in the learner's
// namespace, a veth to each actor host), so that every byte crosses an interface. The learner and
// reward service bind 10.77.0.1 (beyond loopback, hence CURVE with keys from `keel keys`); actor
// host A runs two actors, host B one; weights reach the actors as chunks over the network (no
// shared file). Host B's actor is killed mid-run. Asserted: the run finishes every update, learns
// as the single-machine runs above do (held-out reward does not collapse), every actor contributed
// and A's actors kept going with new weights after B died.
class Netns {
 public:
  Netns() : tag_(std::to_string(::getpid() % 100000)) {}
  ~Netns() {
    for (const auto& ns : names())
      test::run("for p in $(ip netns pids " + ns + " 2>/dev/null); do kill -9 $p; done; ip netns del " + ns + " 2>/dev/null");
  }
  std::string learner() const { return "keel-l" + tag_; }
  std::string host(char h) const { return std::string("keel-") + h + tag_; }
  std::vector<std::string> names() const { return {learner(), host('a'), host('b')}; }
  // Creates the namespaces and links; false (with the reason) when this machine does not allow it.
  bool create(std::string& why) {
    std::string s = "set -e; ";
    for (const auto& ns : names()) s += "ip netns add " + ns + "; ip -n " + ns + " link set lo up; ";
    s += "ip -n " + learner() + " link add br0 type bridge; ip -n " + learner() + " addr add 10.77.0.1/24 dev br0; ip -n " +
         learner() + " link set br0 up; ";
    int last = 2;
    for (char h : {'a', 'b'}) {
      const std::string v = std::string("v") + h;
      s += "ip -n " + learner() + " link add " + v + " type veth peer name eth0 netns " + host(h) + "; ";
      s += "ip -n " + learner() + " link set " + v + " master br0; ip -n " + learner() + " link set " + v + " up; ";
      s += "ip -n " + host(h) + " addr add 10.77.0." + std::to_string(last++) + "/24 dev eth0; ip -n " + host(h) +
           " link set eth0 up; ";
    }
    auto r = test::run(s);
    why = r.output;
    return r.code == 0;
  }

 private:
  std::string tag_;
};

TEST(Learning, PpoAcrossNetworkNamespacesWithCurveSurvivesLosingAnActorHost) {
  SFT_MODEL_OR_FAIL(sft);
  const std::string dir = test::temp_dir("multihost");
  Netns net;
  std::string why;
  ASSERT_TRUE(net.create(why)) << "cannot create network namespaces (root and iproute2 needed): " << why;
  for (const std::string k : {"server", "clients/actor-a", "clients/actor-b"}) {
    auto r = test::keel("keys generate --out " + dir + "/keys/" + k);
    ASSERT_EQ(r.code, 0) << r.output;
  }
  const std::string keys = dir + "/keys", ep = "tcp://10.77.0.1:";
  const int port = 6355;  // in the test's own network namespaces, where every port is free
  std::ostringstream learner_cmd;
  learner_cmd << "ip netns exec " << net.learner() << " " << test::keel_bin() << " launch --out " << dir << " --init " << sft
              << " --actors 0 --host 10.77.0.1 --base-port " << port << " --curve-key " << keys << "/server.secret --curve-allow "
              << keys << "/clients --ppo-args '--updates 20 --rollouts-per-update 64 --eval-every 40 --eval-per-family 100"
              << " --eval-samples 2 --eval-families sort --lr 5e-5 --kl-coef 0.02 --shared-dir none --rollout-log " << dir
              << "/rollouts.h5' > " << dir << "/launch.log 2>&1";
  auto actor = [&](char host, int rank) {
    std::ostringstream c;
    c << "ip netns exec " << net.host(host) << " " << test::keel_bin() << " actor --model " << sft << " --rank " << rank
      << " --world 3 --rollouts " << ep << port << " --weights " << ep << port + 1 << " --chunks " << ep << port + 2
      << " --reward " << ep << port + 5 << " --threads 1 --batch-prompts 16 --families sort --curve-key " << keys
      << "/clients/actor-" << host << ".secret --curve-server-key " << keys << "/server.pub > " << dir << "/actor-" << rank
      << ".log 2>&1 &";
    return c.str();
  };
  std::thread killer([&] {
    for (auto [h, rank] : {std::pair{'a', 0}, {'a', 1}, {'b', 2}}) test::run(actor(h, rank));
    // Mid-run, once host B's actor has had time to contribute (asserted below).
    test::wait_until([&] { return test::published_versions(dir) >= 7; }, std::chrono::minutes(5));
    test::run("for p in $(ip netns pids " + net.host('b') + "); do kill -9 $p; done");  // actor host B is lost
  });
  auto r = test::run(learner_cmd.str());
  killer.join();
  test::run("for p in $(ip netns pids " + net.host('a') + "); do kill -TERM $p; done; sleep 1");
  ASSERT_EQ(r.code, 0) << test::read_text(dir + "/launch.log") << test::read_text(dir + "/logs/learner.log");
  const auto learner_log = test::read_text(dir + "/logs/learner.log");
  EXPECT_NE(learner_log.find("transport: CURVE, 2 allowed client key(s)"), std::string::npos) << learner_log;

  const auto run = test::read_ppo_run(dir + "/learner/metrics.jsonl");
  ASSERT_EQ(run.version.size(), 20u);
  for (size_t i = 0; i < run.version.size(); ++i) EXPECT_EQ(run.version[i], static_cast<double>(i + 1));
  ASSERT_GE(run.eval_reward.size(), 2u);
  std::cerr << "PPO across namespaces: held-out sort reward " << run.eval_reward.front() << " -> " << run.eval_reward.back()
            << "\n";
  EXPECT_GE(run.eval_reward.back(), run.eval_reward.front() - 0.05) << "held-out reward collapsed";

  const auto log = read_rollout_log(dir + "/rollouts.h5");
  uint64_t newest[3] = {0, 0, 0};
  int64_t count[3] = {0, 0, 0};
  for (const auto& row : log.rows) {
    ASSERT_LT(row.actor_id, 3u);
    ++count[row.actor_id];
    newest[row.actor_id] = std::max(newest[row.actor_id], row.policy_version);
  }
  std::cerr << "rollouts per actor: " << count[0] << " " << count[1] << " " << count[2] << "; newest version " << newest[0] << " "
            << newest[1] << " " << newest[2] << "\n";
  for (int a = 0; a < 3; ++a) EXPECT_GT(count[a], 0) << "actor " << a << " never reached the learner";
  EXPECT_GE(std::max(newest[0], newest[1]), 15u) << "host A's actors did not get new weights over the network";
  EXPECT_LT(newest[2], std::max(newest[0], newest[1])) << "host B's actor was killed; it cannot hold the newest weights";
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

// Sends what the learner's rollout socket must refuse: bytes that are no message, and a message
// whose envelope names a version keel does not speak. True once sent.
bool send_garbage(const std::string& rollouts) {
  auto push = wire::zmq_connect(wire::SocketKind::kPush, rollouts);
  push->send("this is not a rollout batch");
  auto bytes = wire::encode({"intruder", wire::Heartbeat{1, 1}});
  for (size_t i = 16; i + 2 <= bytes.size(); i += 8)
    if (bytes[i] == 1 && bytes[i + 1] == 0) {
      bytes[i] = 9;  // the envelope's version field
      break;
    }
  push->send(bytes);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // delivered before the socket closes
  return true;
}

// Chaos: during a PPO run through `keel launch`, a random actor is killed every few seconds, the
// reward service is killed once and the learner is killed once (SIGKILL each); the launcher
// restarts them all, the learner resuming from its last checkpoint; then garbage and a message of
// an unknown version reach the learner's rollout socket. Asserted: the run finishes; the bad
// messages are counted as rejected;
// the published versions are 1..20 with no gap or repeat; no rollout was taken for training twice
// (rollout log's trained_uid) and no actor sent the same rollout twice across its restarts (uid);
// the learner's counter equals the updates' rollouts; the final held-out reward is within noise of
// the undisturbed one-actor run above.
TEST(Learning, ChaosPpoRunLosesNothingAndCountsNothingTwice) {
  SFT_MODEL_OR_FAIL(sft);
  const auto& logged = logged_ppo_run();
  ASSERT_EQ(logged.result.code, 0) << logged.result.output;
  const auto undisturbed = test::read_ppo_run(logged.dir + "/learner/metrics.jsonl");
  ASSERT_FALSE(undisturbed.eval_reward.empty()) << logged.result.output;
  const std::string dir = test::temp_dir("chaos");
  const int port = test::free_port_block(6);  // keel launch takes base..base+5
  const std::string rollouts = "tcp://127.0.0.1:" + std::to_string(port);
  const std::string cmd = "launch --out " + dir + " --init " + sft + " --actors 3 --base-port " + std::to_string(port) +
                          " --ppo-args '--updates 20 --rollouts-per-update 64 --eval-every 40 --eval-per-family 100"
                          " --eval-samples 2 --eval-families sort --lr 5e-5 --kl-coef 0.02 --rollout-log " +
                          dir + "/rollouts.h5' --actor-args '--batch-prompts 16 --families sort'";
  std::atomic<bool> done{false};
  int actor_kills = 0;
  bool learner_killed = false, garbage_sent = false;
  std::thread chaos([&] {
    std::mt19937 rng(7);
    const auto start = std::chrono::steady_clock::now();
    bool reward_killed = false;
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::seconds(4));
      if (done.load()) break;
      const int rank = static_cast<int>(rng() % 3);
      // "[-]-" matches "--" in the target's command line but not in this shell's own.
      if (test::run("pkill -9 -f -- '[-]-rank " + std::to_string(rank) + " --world 3 --rollouts " + rollouts + "'").code == 0)
        ++actor_kills;
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!reward_killed && t > 12) {
        test::run("pkill -9 -f -- 'reward serve [-]-kind task --endpoint tcp://127.0.0.1:" + std::to_string(port + 5) + "'");
        reward_killed = true;
      }
      const auto published = test::read_ppo_run(dir + "/learner/metrics.jsonl").version.size();
      if (!learner_killed && published >= 6) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // into the next update
        learner_killed = test::run("pkill -9 -f -- '[-]-rollouts-endpoint " + rollouts + "'").code == 0;
      }
      // Once the learner has resumed, bad messages on its rollout socket: counted, never trained on.
      if (learner_killed && !garbage_sent && published >= 10) garbage_sent = send_garbage(rollouts);
    }
  });
  auto r = test::keel(cmd);
  done.store(true);
  chaos.join();
  ASSERT_EQ(r.code, 0) << r.output;
  std::cerr << "chaos: " << actor_kills << " actor kills, learner killed " << learner_killed << "\n";
  EXPECT_GE(actor_kills, 3);
  EXPECT_TRUE(learner_killed);
  EXPECT_TRUE(garbage_sent);
  EXPECT_NE(r.output.find("reward exited"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("learner exited"), std::string::npos) << r.output;
  EXPECT_NE(test::read_text(dir + "/logs/learner.log").find("resumed from"), std::string::npos);

  const auto run = test::read_ppo_run(dir + "/learner/metrics.jsonl");
  ASSERT_EQ(run.version.size(), 20u) << "a version was lost or repeated";
  for (size_t i = 0; i < run.version.size(); ++i) EXPECT_EQ(run.version[i], static_cast<double>(i + 1));
  EXPECT_GE(run.rejected, 2.0) << "garbage and wrong-version messages must be counted as rejected";
  double trained_counter = 0;
  {
    std::ifstream f(dir + "/learner/metrics.jsonl");
    std::string line;
    while (std::getline(f, line)) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("ppo/rollouts_trained")) trained_counter = j["ppo/rollouts_trained"].get<double>();
    }
  }
  EXPECT_EQ(trained_counter, 20.0 * 64);

  const auto log = read_rollout_log(dir + "/rollouts.h5");
  std::set<uint64_t> received, trained;
  for (const auto& row : log.rows)
    EXPECT_TRUE(received.insert(row.uid).second) << "an actor sent rollout " << row.uid << " twice";
  for (const auto& t : log.trained) {
    EXPECT_TRUE(trained.insert(t.uid).second) << "rollout " << t.uid << " taken for training twice";
    EXPECT_TRUE(received.count(t.uid)) << "trained rollout " << t.uid << " never arrived";
  }
  // Every completed update took 64; the update cut short by the kill took at most 64 more.
  EXPECT_GE(log.trained.size(), 20u * 64);
  EXPECT_LE(log.trained.size(), 21u * 64);

  ASSERT_GE(run.eval_reward.size(), 2u);
  const double after = run.eval_reward.back(), calm = undisturbed.eval_reward.back();
  std::cerr << "chaos: held-out sort reward " << run.eval_reward.front() << " -> " << after << " (undisturbed run: " << calm
            << ")\n";
  EXPECT_NEAR(after, calm, 0.1) << "the disturbed run's reward is outside the noise of the undisturbed one";
  EXPECT_GE(after, run.eval_reward.front() - 0.05);
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

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

namespace keel {
namespace {

// Liveness under flow control: an actor frozen with SIGSTOP keeps its sockets open but sends
// nothing, so what it was granted must lapse after --peer-timeout and the other actor carry the
// run; the reward service frozen for 30 s stalls every actor's scoring, and the run goes on once it
// resumes. Asserted: the run finishes with versions 1..12 and no gap, and at least 3 versions were
// published while actor-0 was frozen.
TEST(Learning, PpoGoesOnPastAFrozenActorAndAFrozenRewardService) {
  SFT_MODEL_OR_FAIL(sft);
  const std::string dir = test::temp_dir("frozen");
  const int port = test::free_port_block(6);
  const std::string rollouts = "tcp://127.0.0.1:" + std::to_string(port);
  const std::string cmd = "launch --out " + dir + " --init " + sft + " --actors 2 --base-port " + std::to_string(port) +
                          " --ppo-args '--updates 12 --rollouts-per-update 32 --eval-at-start false --eval-every 0"
                          " --eval-per-family 20 --eval-samples 1 --eval-families sort --peer-timeout 3'"
                          " --actor-args '--batch-prompts 16 --families sort'";
  std::atomic<bool> done{false};
  size_t frozen_at = 0, thawed_at = 0;
  auto versions = [&] { return test::read_ppo_run(dir + "/learner/metrics.jsonl").version.size(); };
  // Waits until `v` versions are published, the run ends, or 120 s pass (the run is stuck).
  auto wait_for = [&](size_t v) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!done.load() && versions() < v && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
  };
  std::thread chaos([&] {
    const std::string actor0 = "'[-]-rank 0 --world 2 --rollouts " + rollouts + "'";
    const std::string reward = "'reward serve [-]-kind task --endpoint tcp://127.0.0.1:" + std::to_string(port + 5) + "'";
    wait_for(2);
    test::run("pkill -STOP -f -- " + actor0);
    frozen_at = versions();
    wait_for(frozen_at + 3);
    test::run("pkill -STOP -f -- " + reward);
    std::this_thread::sleep_for(std::chrono::seconds(30));
    test::run("pkill -CONT -f -- " + reward);
    thawed_at = versions();
    test::run("pkill -CONT -f -- " + actor0);
  });
  auto r = test::keel(cmd);
  done.store(true);
  chaos.join();
  ASSERT_EQ(r.code, 0) << r.output;
  const auto run = test::read_ppo_run(dir + "/learner/metrics.jsonl");
  ASSERT_EQ(run.version.size(), 12u) << r.output;
  for (size_t i = 0; i < run.version.size(); ++i) EXPECT_EQ(run.version[i], static_cast<double>(i + 1));
  std::cerr << "frozen: actor-0 frozen at version " << frozen_at << ", thawed at " << thawed_at << "\n";
  EXPECT_GE(thawed_at, frozen_at + 3) << "the run must go on while an actor is frozen";
}

}  // namespace
}  // namespace keel
