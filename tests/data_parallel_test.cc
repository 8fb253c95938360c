// Data parallelism on c10d/Gloo through the keel binary: 2 ranks with a micro-batch each reach the
// same parameters as 1 rank accumulating both micro-batches (SFT, DPO and PPO), and a collective that
// waits on a killed rank fails within its timeout naming that rank.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "core/checkpoint.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

constexpr const char* kCorpus = "/usr/share/games/fortunes";

// A tiny model and the task data, shared by the cases below.
std::string setup() {
  static std::string dir;
  if (!dir.empty()) return dir;
  dir = test::temp_dir("data_parallel");
  auto r =
      test::keel(std::string("tokenizer train --input ") + kCorpus + " --doc-separator % --vocab-size 512 --out " + dir + "/tok");
  EXPECT_EQ(r.code, 0) << r.output;
  r = test::keel("model init --tokenizer " + dir + "/tok.model --d-model 64 --n-layer 2 --n-head 2 --out " + dir + "/init");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(test::keel("tasks export --split train --per-family 50 --out " + dir + "/sft.jsonl").code, 0);
  EXPECT_EQ(test::keel("tasks export --pairs --split train --per-family 50 --out " + dir + "/pairs.jsonl").code, 0);
  r = test::keel("prefs import --input " + dir + "/pairs.jsonl --tokenizer " + dir + "/init --out " + dir + "/pairs.h5");
  EXPECT_EQ(r.code, 0) << r.output;
  return dir;
}

// Runs `args` as one process with --grad-accum 2 and as two ranks with --grad-accum 1.
// `models`: the model directories of the run's output to compare ("model", and e.g. "critic").
void expect_two_ranks_equal_one(const std::string& name, const std::string& args,
                                const std::vector<std::string>& models = {"model"}) {
  const std::string dir = setup(), out = test::temp_dir(name);
  auto one = test::keel(args + " --threads 1 --grad-accum 2 --out " + out + "/one");
  ASSERT_EQ(one.code, 0) << one.output;
  const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(test::free_port_block(1)) + " WORLD_SIZE=2 ";
  test::RunResult r1;
  std::thread rank1(
      [&] { r1 = test::run(env + "RANK=1 " + test::keel_bin() + " " + args + " --threads 1 --out " + out + "/two"); });
  auto r0 = test::run(env + "RANK=0 " + test::keel_bin() + " " + args + " --threads 1 --out " + out + "/two");
  rank1.join();
  ASSERT_EQ(r0.code, 0) << r0.output;
  ASSERT_EQ(r1.code, 0) << r1.output;
  EXPECT_NE(r0.output.find("data parallel: rank 0 of 2"), std::string::npos) << r0.output;
  auto init = load_model(dir + "/init");
  const auto ti = model_tensors(init);
  for (const auto& m : models) {
    auto a = load_model(out + "/one/" + m), b = load_model(out + "/two/" + m);
    const auto ta = model_tensors(a), tb = model_tensors(b);
    double diff = 0, moved = 0;
    for (const auto& [k, v] : ta) {
      diff = std::max(diff, (v - tb.at(k)).abs().max().item<double>());
      if (ti.count(k)) moved = std::max(moved, (v - ti.at(k)).abs().max().item<double>());
    }
    std::cerr << name << " " << m << ": max |1 rank - 2 ranks| = " << diff << ", max change from init " << moved << "\n";
    EXPECT_LE(diff, 1e-5) << m;
    EXPECT_GT(moved, 1e-3) << m << ": training must have moved the parameters";
  }
}

TEST(DataParallel, TwoRanksEqualOneRankForSft) {
  const std::string dir = setup();
  expect_two_ranks_equal_one("dp_sft",
                             "sft --init " + dir + "/init --train-file " + dir +
                                 "/sft.jsonl --steps 5 --batch-size 4 --seq-len 64 --lr 1e-3 --warmup-steps 0 --eval-every 0");
}

TEST(DataParallel, TwoRanksEqualOneRankForDpo) {
  const std::string dir = setup();
  expect_two_ranks_equal_one("dp_dpo",
                             "dpo --init " + dir + "/init --train " + dir +
                                 "/pairs.h5 --eval-pairs 0 --steps 5 --batch-size 4 --lr 1e-3 --warmup-steps 0 --eval-every 0");
}

// PPO on the rollouts of a short logged run (`keel ppo --rollouts-from`, the same update batches
// whatever the number of ranks): 2 ranks each take half of every minibatch.
TEST(DataParallel, TwoRanksEqualOneRankForPpoWithASeparateCritic) {
  const std::string dir = setup(), run = test::temp_dir("dp_ppo_log");
  auto r = test::keel("launch --out " + run + " --init " + dir + "/init --actors 1 --base-port " +
                      std::to_string(test::free_port_block(6)) +
                      " --ppo-args '--updates 2"
                      " --rollouts-per-update 16 --eval-per-family 2 --eval-samples 1 --rollout-log " +
                      run + "/rollouts.h5' --actor-args '--batch-prompts 8 --families sort'");
  ASSERT_EQ(r.code, 0) << r.output;
  expect_two_ranks_equal_one("dp_ppo",
                             "ppo --init " + dir + "/init --rollouts-from " + run +
                                 "/rollouts.h5 --updates 2 --rollouts-per-update 16"
                                 " --minibatches 2 --epochs 2 --lr 1e-3 --eval-every 0 --eval-per-family 2 --eval-samples 1"
                                 " --critic separate",
                             {"model", "critic"});
}

TEST(DataParallel, ACollectiveWaitingOnADeadRankFailsNamingIt) {
  const std::string dir = setup(), out = test::temp_dir("dp_dead");
  const std::string args = "sft --init " + dir + "/init --train-file " + dir +
                           "/sft.jsonl --steps 100000 --batch-size 4 --seq-len 64 --eval-every 0 --checkpoint-every 0"
                           " --collective-timeout 10 --threads 1 --out " +
                           out;
  const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(test::free_port_block(1)) + " WORLD_SIZE=2 ";
  // Rank 1 dies once the ranks train together (rank 0 has logged a step), mid-collective.
  std::chrono::steady_clock::time_point killed_at{};
  std::thread killer([&] {
    test::wait_until(
        [&] {
          std::error_code ec;
          return std::filesystem::file_size(out + "/metrics.jsonl", ec) > 0 && !ec;
        },
        std::chrono::minutes(2));
    killed_at = std::chrono::steady_clock::now();
    test::run("pkill -9 -f -- '" + out + " --keep-checkpoints 3'");  // rank 1 alone has this option
  });
  test::RunResult r1;
  std::thread rank1([&] { r1 = test::run(env + "RANK=1 " + test::keel_bin() + " " + args + " --keep-checkpoints 3"); });
  const auto start = std::chrono::steady_clock::now();
  auto r0 = test::run(env + "RANK=0 " + test::keel_bin() + " " + args);
  const auto end = std::chrono::steady_clock::now();
  killer.join();
  rank1.join();
  EXPECT_NE(r0.code, 0) << "rank 0 must fail when rank 1 dies";
  ASSERT_GT(killed_at, start) << "rank 0 never logged a step: " << r0.output;
  const double secs = std::chrono::duration<double>(end - killed_at).count();
  EXPECT_LT(secs, 10 + 30) << "the failure must come within the collective timeout after the kill, not hang";
  EXPECT_NE(r0.output.find("rank(s) that did not take part: 1"), std::string::npos) << r0.output;
}

}  // namespace
}  // namespace keel
