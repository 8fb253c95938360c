// The fixture every learning test starts from, shared by the files of the learning_test binary:
// the default job's pipeline at half width (tokenizer, token files, pretrain, SFT), built once per
// process by whichever test needs it first (so that any test runs alone: --gtest_filter picks one
// and it builds what it needs), and one logged PPO run that later tests mine or compare with.
#pragma once

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/test_support.h"

namespace keel::learning {

inline constexpr const char* kCorpus = "/usr/share/games/fortunes";

// `keel eval tasks` on `model` (greedy, 100 per family), written to `out` and returned.
nlohmann::json eval_tasks(const std::string& model, const std::string& out);
// Every value of `key` in a run's metrics.jsonl, in order.
std::vector<double> metric_values(const std::string& run, const std::string& key);
double mean_accuracy(const nlohmann::json& tasks);

// The default job's recipe at half its width (d 128 instead of 256), which trains in 7 minutes
// instead of 12 on 2 cores and keeps every later run fast; the tests' margins are measured on it.
struct SftPipeline {
  std::string dir, failure;  // failure: the first step that failed, with its output
  double unigram = -1, pre_loss = -1;
  std::string sft() const { return dir + "/sft/model"; }
};
const SftPipeline& sft_pipeline();
// The SFT model's greedy held-out task accuracy (eval tasks, 100 per family), evaluated once.
const nlohmann::json& sft_task_accuracy();

// PPO through `keel launch` (reward service, learner and an actor as separate processes) from the
// SFT model, on the sort family, every rollout logged (the actor samples 2 responses per prompt):
// 60 updates of 64 rollouts. Run once per process.
struct PpoOutcome {
  std::string dir;
  test::RunResult result;
};
const PpoOutcome& logged_ppo_run();

}  // namespace keel::learning

// The SFT model's directory; fails the calling test when the pipeline did not finish.
#define SFT_MODEL_OR_FAIL(var)                                     \
  const auto& var##_built = ::keel::learning::sft_pipeline();      \
  ASSERT_TRUE(var##_built.failure.empty()) << var##_built.failure; \
  const std::string var = var##_built.sft()
