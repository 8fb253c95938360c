#include "tests/learning_fixture.h"

#include <iostream>
#include <sstream>

namespace keel::learning {
namespace {

// Every keel the learning tests start computes on the kernels their margins were measured on.
class PinnedKernels : public ::testing::Environment {
 public:
  void SetUp() override { test::pin_cpu_kernels(); }
};
[[maybe_unused]] const auto* const kPinnedKernels = ::testing::AddGlobalTestEnvironment(new PinnedKernels);

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

}  // namespace

nlohmann::json eval_tasks(const std::string& model, const std::string& out) {
  auto r = test::keel("eval tasks --model " + model + " --per-family 100 --out " + out);
  EXPECT_EQ(r.code, 0) << r.output;
  std::cerr << r.output;
  return nlohmann::json::parse(test::read_text(out));
}

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

const SftPipeline& sft_pipeline() {
  static const SftPipeline p = build_sft_pipeline();
  return p;
}

const nlohmann::json& sft_task_accuracy() {
  static const nlohmann::json j = eval_tasks(sft_pipeline().sft(), sft_pipeline().dir + "/sft_tasks.json");
  return j;
}

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

}  // namespace keel::learning
