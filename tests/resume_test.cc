// Exact resume: a pretrain run killed with SIGKILL after a checkpoint and started again with the
// same command reaches the same loss at every later step as an uninterrupted run (to 1e-5).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/tasks.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

// step -> last logged train/step_loss (a resumed run logs the steps after its checkpoint again).
std::map<int64_t, double> step_losses(const std::string& run) {
  std::map<int64_t, double> out;
  std::istringstream is(test::read_text(run + "/metrics.jsonl"));
  std::string line;
  while (std::getline(is, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("train/step_loss")) out[j["step"].get<int64_t>()] = j["train/step_loss"].get<double>();
  }
  return out;
}

int64_t latest_step(const std::string& run) {
  const auto s = test::read_text(run + "/checkpoints/latest");
  return s.size() > 5 ? std::stoll(s.substr(5)) : -1;
}

TEST(Resume, KilledRunResumesExactly) {
  const std::string dir = test::temp_dir("resume");
  std::string corpus;
  for (const auto& t : make_tasks(TaskSplit::kTrain, 400, 3)) corpus += t.prompt + " " + t.answer + "\n%\n";
  test::write_text(dir + "/corpus.txt", corpus);
  auto r = test::keel("tokenizer train --input " + dir + "/corpus.txt --doc-separator % --vocab-size 512 --out " + dir + "/tok");
  ASSERT_EQ(r.code, 0) << r.output;
  r = test::keel("data tokenize --input " + dir + "/corpus.txt --doc-separator % --val-fraction 0.1 --tokenizer " + dir +
                 "/tok.model --out " + dir + "/data");
  ASSERT_EQ(r.code, 0) << r.output;

  const std::string common = "pretrain --data " + dir + "/data --tokenizer " + dir +
                             "/tok.model --d-model 64 --n-layer 2 --n-head 4 --seq-len 64 --batch-size 8 --grad-accum 2"
                             " --steps 300 --warmup-steps 10 --lr 3e-3 --log-every 1 --eval-every 100 --threads 2"
                             " --checkpoint-every 20 --seed 7 --out ";
  r = test::keel(common + dir + "/whole");
  ASSERT_EQ(r.code, 0) << r.output;

  // The same run, killed once its checkpoint at step >= 60 exists.
  const std::string killed = dir + "/killed";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string cmd = "exec " + test::keel_bin() + " " + common + killed + " > " + dir + "/killed.log 2>&1";
    execl("/bin/sh", "sh", "-c", cmd.c_str(), nullptr);
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
  while (latest_step(killed) < 60 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed; make it longer";
  const int64_t resumed_from = latest_step(killed);
  ASSERT_GE(resumed_from, 60);
  ASSERT_LT(resumed_from, 300);

  r = test::keel(common + killed);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;

  const auto a = step_losses(dir + "/whole"), b = step_losses(killed);
  ASSERT_EQ(a.size(), 300u);
  ASSERT_EQ(b.size(), 300u);
  for (int64_t s = resumed_from + 1; s <= 300; ++s) EXPECT_NEAR(a.at(s), b.at(s), 1e-5) << "step " << s;
  // The run learned something, so equality is not trivially about constant losses.
  EXPECT_LT(a.at(300), a.at(1) - 1.0);
}

}  // namespace
}  // namespace keel
