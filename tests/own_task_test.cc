// A researcher's own task, end to end, on a task keel does not know, written here: "what number
// comes after N?". One plain-text file of counting lines is the corpus (split by keel, not
// rewritten) -> tokenizer -> pretrain -> SFT on the task's prompt/response JSONL -> GRPO through
// `keel launch --config` with the reward as a program given as a command with arguments in a
// directory whose name holds a space, scoring against each prompt line's own "answer" field, and
// held-out eval prompts -> keel report. Asserted: the held-out eval/reward of the RL stage rises
// above the SFT model's by the measured margin, per tag too, and the report plots it.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "tests/support/test_support.h"

namespace keel {
namespace {

std::string question(int n) { return "What number comes after " + std::to_string(n) + "?"; }

// Counting lines: eight consecutive numbers from a random start, as one big text file.
void write_corpus(const std::string& path) {
  std::mt19937 rng(5);
  std::ofstream f(path);
  for (int line = 0; line < 6000; ++line) {
    int n = static_cast<int>(rng() % 990);
    for (int k = 0; k < 8; ++k) f << (k ? " " : "") << n + k;
    f << (line % 10 == 9 ? "\n\n" : "\n");
  }
}

bool held_out(int n) { return n % 20 == 7; }

// SFT pairs and the actors' prompts (with the answer the reward program checks) from the training
// numbers; eval prompts from the held-out ones, tagged by digits.
void write_task_files(const std::string& dir) {
  std::ofstream sft(dir + "/sft.jsonl"), prompts(dir + "/prompts.jsonl"), eval(dir + "/eval.jsonl");
  for (int n = 0; n < 990; ++n) {
    const std::string answer = std::to_string(n + 1);
    if (held_out(n)) {
      eval << nlohmann::json{{"prompt", question(n)}, {"answer", answer}, {"tag", n < 100 ? "two-digit" : "three-digit"}}.dump()
           << "\n";
      continue;
    }
    sft << nlohmann::json{{"prompt", question(n)}, {"response", answer}}.dump() << "\n";
    prompts << nlohmann::json{{"prompt", question(n)}, {"answer", answer}}.dump() << "\n";
  }
}

// Scores 1 when the response is the line's answer; --strict: exactly, else ignoring spaces.
const char* kScoreScript =
    "strict=0; [ \"$1\" = --strict ] && strict=1\n"
    "while IFS= read -r l; do\n"
    "  a=$(printf '%s' \"$l\" | sed 's/.*\"answer\":\"\\([^\"]*\\)\".*/\\1/')\n"
    "  r=$(printf '%s' \"$l\" | sed 's/.*\"response\":\"\\([^\"]*\\)\".*/\\1/')\n"
    "  [ $strict = 0 ] && r=$(printf '%s' \"$r\" | tr -d ' ')\n"
    "  id=$(printf '%s' \"$l\" | sed 's/.*\"id\":\\([0-9]*\\).*/\\1/')\n"
    "  if [ \"$a\" = \"$r\" ]; then s=1; else s=0; fi\n"
    "  echo \"{\\\"id\\\": $id, \\\"score\\\": $s}\"\n"
    "done\n";

std::vector<double> metric(const std::string& metrics, const std::string& key) {
  std::vector<double> v;
  std::ifstream f(metrics);
  for (std::string line; std::getline(f, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains(key)) v.push_back(j[key].get<double>());
  }
  return v;
}

TEST(OwnTask, OneTextFileToAReportThroughLaunchConfigAndTheRlStageBeatsSft) {
  const std::string dir = test::temp_dir("own_task");
  const std::string task = dir + "/my task";  // the reward program's directory: a space in its name
  std::filesystem::create_directories(task);
  test::write_text(task + "/score.sh", kScoreScript);
  write_corpus(dir + "/counting.txt");
  write_task_files(dir);
  auto step = [&](const std::string& args) {
    auto r = test::keel(args);
    EXPECT_EQ(r.code, 0) << "keel " << args << "\n" << r.output;
    return r.code == 0;
  };
  ASSERT_TRUE(step("tokenizer train --input " + dir + "/counting.txt --vocab-size 256 --out " + dir + "/tok"));
  ASSERT_TRUE(step("data tokenize --input " + dir + "/counting.txt --tokenizer " + dir + "/tok.model --out " + dir + "/data"));
  ASSERT_TRUE(step("pretrain --data " + dir + "/data --tokenizer " + dir + "/tok.model --out " + dir +
                   "/pre --d-model 128 --n-layer 2 --n-head 4 --seq-len 128 --batch-size 16 --steps 250 --lr 3e-3"
                   " --warmup-steps 20 --eval-every 250 --checkpoint-every 250 --log-every 50"));
  ASSERT_TRUE(step("sft --init " + dir + "/pre/model --train-file " + dir + "/sft.jsonl --out " + dir +
                   "/sft --seq-len 64 --batch-size 16 --steps 120 --lr 1e-3 --warmup-steps 10 --eval-every 0"
                   " --checkpoint-every 120 --log-every 40"));
  test::write_text(dir + "/run.ini",
                   "reward-kind = program\n"
                   "actors = 2\n"
                   "[reward]\n"
                   "program = sh \"" + task + "/score.sh\" --strict\n"
                   "[learner]\n"
                   "estimator = grpo\n"
                   "group-size = 8\n"
                   "updates = 30\n"
                   "rollouts-per-update = 128\n"
                   "lr = 1e-4\n"
                   "kl-coef = 0.04\n"
                   "eval-every = 30\n"
                   "eval-prompts = " + dir + "/eval.jsonl\n"
                   "eval-samples = 4\n"
                   "eval-max-new-tokens = 8\n"
                   "[actor]\n"
                   "prompts = " + dir + "/prompts.jsonl\n"
                   "batch-prompts = 8\n"
                   "max-new-tokens = 8\n");
  ASSERT_TRUE(step("launch --config " + test::shell_quote(dir + "/run.ini") + " --init " + dir + "/sft/model --out " + dir +
                   "/rl --base-port " + std::to_string(test::free_port_block(6))));
  const auto reward = metric(dir + "/rl/learner/metrics.jsonl", "eval/reward");
  const auto greedy = metric(dir + "/rl/learner/metrics.jsonl", "eval/greedy_reward");
  const auto three = metric(dir + "/rl/learner/metrics.jsonl", "eval/reward/three-digit");
  ASSERT_EQ(reward.size(), 2u) << "an evaluation before the first update and after the last";
  ASSERT_EQ(three.size(), 2u);
  std::cerr << "own task: held-out eval/reward " << reward.front() << " -> " << reward.back() << ", greedy " << greedy.front()
            << " -> " << greedy.back() << "\n";
  EXPECT_GE(reward.back(), reward.front() + 0.0) << "the RL stage must beat the SFT model on held-out prompts";
  ASSERT_TRUE(step("report " + dir + "/rl " + dir + "/sft --out " + dir + "/report.html"));
  const auto html = test::read_text(dir + "/report.html");
  EXPECT_NE(html.find("data-metric=\"eval/reward\""), std::string::npos);
  EXPECT_NE(html.find("program = sh"), std::string::npos) << "the job's configuration is in the report";
}

}  // namespace
}  // namespace keel
