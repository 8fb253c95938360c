// A researcher's own task, end to end, on a task keel does not know, written here: "what number
// comes after N?". One plain-text file of counting lines is the corpus (split by keel, not
// rewritten) -> tokenizer -> pretrain -> SFT on the task's prompt/response JSONL -> GRPO through
// `keel launch --config` with the reward as a program given as a command with arguments in a
// directory whose name holds a space, scoring against each prompt line's own "answer" field, and
// held-out eval prompts -> keel generate -> keel eval prompts -> keel report. Asserted: every step
// works as a user would run it, the outputs join back to the inputs, per-tag metrics exist, the
// report holds the run and its configuration, and the RL stage raises the held-out reward above
// the SFT model's by a measured margin.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "tests/support/test_support.h"

namespace keel {
namespace {

std::string question(int n) { return "What number comes after " + std::to_string(n) + "?"; }

bool held_out(int n) { return n % 20 == 7; }

// One big text file: counting lines (eight consecutive numbers from a random start) and, now and
// then, the question asked and answered for a training number.
void write_corpus(const std::string& path) {
  std::mt19937 rng(5);
  std::ofstream f(path);
  for (int line = 0; line < 6000; ++line) {
    const int n = static_cast<int>(rng() % 990);
    if (line % 4 == 3 && !held_out(n)) {
      f << question(n) << " " << n + 1 << "\n";
      continue;
    }
    for (int k = 0; k < 8; ++k) f << (k ? " " : "") << n + k;
    f << (line % 10 == 9 ? "\n\n" : "\n");
  }
}

// SFT pairs and the actors' prompts (with the answer the reward program checks) from the training
// numbers; held-out eval prompts from the others, tagged by digits.
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
  test::pin_cpu_kernels();
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
  ASSERT_TRUE(step("tokenizer train --input " + dir + "/counting.txt --vocab-size 300 --out " + dir + "/tok"));
  // The held-out draw hashes each file's path as given: the file named from its own directory
  // splits the same in every test directory (and pretraining sees the same text every run).
  auto tokenized = test::run("cd " + test::shell_quote(dir) + " && " + test::keel_bin() +
                             " data tokenize --input counting.txt --val-fraction 0.1 --tokenizer tok.model --out data");
  ASSERT_EQ(tokenized.code, 0) << tokenized.output;
  ASSERT_TRUE(step("pretrain --data " + dir + "/data --tokenizer " + dir + "/tok.model --out " + dir +
                   "/pre --d-model 128 --n-layer 2 --n-head 4 --seq-len 128 --batch-size 16 --steps 800 --lr 3e-3"
                   " --warmup-steps 20 --eval-every 800 --checkpoint-every 800 --log-every 100"));
  ASSERT_TRUE(step("sft --init " + dir + "/pre/model --train-file " + dir + "/sft.jsonl --out " + dir +
                   "/sft --seq-len 64 --batch-size 16 --steps 300 --lr 1e-3 --warmup-steps 10 --eval-every 0"
                   " --checkpoint-every 300 --log-every 100"));
  // Generation keeps each input line's fields, so results join back to the inputs.
  {
    // It ends saying what it produced and at what rate.
    const auto g = test::keel("generate --model " + dir + "/sft/model --prompts " + dir +
                              "/eval.jsonl --temperature 0 --max-new-tokens 8 --out " + dir + "/generated.jsonl");
    ASSERT_EQ(g.code, 0) << g.output;
    std::smatch m;
    ASSERT_TRUE(std::regex_search(g.output, m,
                                  std::regex("generated ([0-9]+) responses, ([0-9]+) new tokens in [0-9.e-]+ s of "
                                             "sampling: [0-9.e+]+ new tokens/s")))
        << g.output;
    EXPECT_GT(std::stoi(m[2]), std::stoi(m[1])) << g.output;  // more than one token a response
  }
  {
    std::ifstream in(dir + "/eval.jsonl"), out(dir + "/generated.jsonl");
    std::string a, b;
    int lines = 0;
    while (std::getline(in, a) && std::getline(out, b)) {
      const auto x = nlohmann::json::parse(a), y = nlohmann::json::parse(b);
      for (const auto& [k, v] : x.items()) EXPECT_EQ(y[k], v) << "field " << k << " of " << a;
      EXPECT_NE(y["rendered_prompt"], y["prompt"]);
      EXPECT_TRUE(y["response"].is_string());
      ++lines;
    }
    EXPECT_EQ(lines, 50);
  }
  test::write_text(dir + "/run.ini",
                   "reward-kind = program\n"
                   "actors = 2\n"
                   "[reward]\n"
                   "program = sh \"" +
                       task +
                       "/score.sh\" --strict\n"
                       "[learner]\n"
                       "estimator = grpo\n"
                       "group-size = 8\n"
                       "updates = 40\n"
                       "rollouts-per-update = 256\n"
                       "epochs = 1\n"
                       "minibatches = 1\n"
                       "lr = 1e-4\n"
                       "kl-coef = 0.04\n"
                       "eval-every = 40\n"
                       "eval-prompts = " +
                       dir +
                       "/eval.jsonl\n"
                       "eval-samples = 16\n"
                       "eval-max-new-tokens = 8\n"
                       "[actor]\n"
                       "prompts = " +
                       dir +
                       "/prompts.jsonl\n"
                       "batch-prompts = 8\n"
                       "max-new-tokens = 8\n");
  ASSERT_TRUE(step("launch --config " + test::shell_quote(dir + "/run.ini") + " --init " + dir + "/sft/model --out " + dir +
                   "/rl --base-port " + std::to_string(test::free_port_block(6))));
  const auto reward = metric(dir + "/rl/learner/metrics.jsonl", "eval/reward");
  const auto greedy = metric(dir + "/rl/learner/metrics.jsonl", "eval/greedy_reward");
  const auto three_digit = metric(dir + "/rl/learner/metrics.jsonl", "eval/reward/three-digit");
  ASSERT_EQ(reward.size(), 2u) << "an evaluation before the first update and after the last";
  ASSERT_EQ(three_digit.size(), 2u);
  std::cerr << "own task: held-out eval/reward " << reward.front() << " -> " << reward.back() << ", greedy " << greedy.front()
            << " -> " << greedy.back() << ", three-digit " << three_digit.front() << " -> " << three_digit.back() << "\n";
  // RL sharpens what SFT left between its greedy and its sampled answers: with a pretrained model that
  // has learned to count, the SFT model answers every held-out number right greedily but samples the
  // right answer 0.8075 of the time, and GRPO on the training numbers raised that to 0.881 and 0.88
  // in this test (0.892 in 40 updates, 0.902 in 60, in a run outside it): 37-43% of the headroom;
  // asserted: at least 20% of it (800 sampled draws, standard error about 0.015). Pretraining,
  // tokenizer and SFT are deterministic for the seed (the same 0.8075 in every run), but this toy's
  // pretraining is chaotic across seeds and settings: the step at which a 2-layer model learns to
  // count varies from 500 to over 1200, and a model that learned it fully took the question format
  // in SFT worse (held-out 0.01). A build whose rounding sends pretraining elsewhere fails here,
  // naming that, rather than passing on a weaker claim.
  const double headroom = greedy.front() - reward.front();
  EXPECT_GE(headroom, 0.1) << "the SFT model left no headroom for RL (greedy " << greedy.front() << ", sampled " << reward.front()
                           << "): pretraining did not learn to count as it does for this seed";
  EXPECT_GE(reward.back(), reward.front() + 0.2 * headroom) << "the RL stage must raise the held-out reward above SFT's";
  // The same evaluation offline, for any model directory, scored in process by the same program.
  auto offline = test::keel("eval prompts --model " + dir + "/rl/learner/model --prompts " + dir +
                            "/eval.jsonl --reward-kind program --reward-program " +
                            test::shell_quote("sh \"" + task + "/score.sh\" --strict") +
                            " --samples 2 --max-new-tokens 8 --out " + dir + "/eval_rows.jsonl");
  ASSERT_EQ(offline.code, 0) << offline.output;
  const auto metrics = nlohmann::json::parse(offline.output.substr(offline.output.find("{\n")));
  EXPECT_GE(metrics["eval/greedy_reward"].get<double>(), 0.0);
  EXPECT_EQ(metrics.count("eval/reward/three-digit"), 1u);
  const auto first_row = nlohmann::json::parse(
      test::read_text(dir + "/eval_rows.jsonl").substr(0, test::read_text(dir + "/eval_rows.jsonl").find('\n')));
  EXPECT_EQ(first_row["answer"], "8") << "each row keeps its prompt line's fields";
  EXPECT_EQ(first_row["samples"].size(), 2u);
  ASSERT_TRUE(step("report " + dir + "/rl " + dir + "/sft --out " + dir + "/report.html"));
  const auto html = test::read_text(dir + "/report.html");
  EXPECT_NE(html.find("data-metric=\"eval/reward\""), std::string::npos);
  EXPECT_NE(html.find("program = sh"), std::string::npos) << "the job's configuration is in the report";
}

}  // namespace
}  // namespace keel
