// A researcher's job as configuration: command lines split with the shell's quoting rules, and a
// keel launch config file with one section per role whose values (a reward command with
// arguments, a path with a space) reach each process whole; every bad part named before a process
// starts.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <optional>

#include "core/error.h"
#include "core/shell_words.h"
#include "learner/actor_devices.h"
#include "learner/actor_learner_job.h"
#include "learner/data_parallel.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

TEST(ShellWords, SplitAsAShellWouldAndQuoteBack) {
  const std::vector<std::string> want = {"a", "b c", "d \"e\" $f", "g h", "", "it's", "x=1"};
  EXPECT_EQ(shell_split(" a 'b c'\t\"d \\\"e\\\" \\$f\" g\\ h '' it\\'s x=1 "), want);
  EXPECT_EQ(shell_split(shell_join(want)), want);
  EXPECT_EQ(shell_join({"--lr", "1e-4", "--program", "python3 \"my dir/s.py\""}),
            "--lr 1e-4 --program 'python3 \"my dir/s.py\"'");
  EXPECT_NE(test::keel_error_of([] { shell_split("--program 'python3 x.py"); }).find("unterminated ' quote"), std::string::npos);
  EXPECT_NE(test::keel_error_of([] { shell_split("a\\"); }).find("trailing backslash"), std::string::npos);
}

struct Launch {
  std::string dir;
  test::RunResult r;
};

// `keel launch --check-config` on a config file: every role's command checked, none started.
Launch check_launch(const std::string& name, const std::string& ini, const std::string& extra = "") {
  const std::string dir = test::temp_dir(name);
  test::write_text(dir + "/run.ini", ini);
  return {dir, test::keel("launch --config " + dir + "/run.ini --init " + dir + "/sft --out " + dir + "/run --actors 2 " + extra +
                          " --check-config")};
}

TEST(LaunchConfig, SectionsReachEachRoleWholeAndThePassThroughWins) {
  const std::string ini =
      "reward-kind = program\n"
      "[reward]\n"
      "program = python3 \"/tmp/my scorers/score.py\" --strict\n"
      "program-timeout-ms = 5000\n"
      "[learner]\n"
      "estimator = grpo\n"
      "group-size = 4\n"
      "updates = 5\n"
      "[actor]\n"
      "families = arithmetic\n";
  const auto l = check_launch("launch_cfg", ini, "--ppo-args '--updates 7'");
  ASSERT_EQ(l.r.code, 0) << l.r.output;
  const auto& out = l.r.output;
  EXPECT_NE(out.find("--kind program"), std::string::npos) << out;
  EXPECT_NE(out.find("--program 'python3 \"/tmp/my scorers/score.py\" --strict' --program-timeout-ms 5000"), std::string::npos)
      << out;
  EXPECT_NE(out.find("--estimator grpo --group-size 4 --updates 7"), std::string::npos) << out;
  EXPECT_EQ(out.find("--updates 5"), std::string::npos) << "the pass-through option wins over the section's\n" << out;
  // The actors get the learner's group size; both actors appear, with their ranks.
  EXPECT_NE(out.find("actor-1: keel actor"), std::string::npos) << out;
  EXPECT_NE(out.find("--families arithmetic --group-size 4"), std::string::npos) << out;
}

TEST(LaunchConfig, ABadSectionOrOptionIsNamedBeforeAnythingStarts) {
  auto l = check_launch("launch_cfg_role", "[critic]\nlr = 1e-5\n");
  EXPECT_EQ(l.r.code, 1);
  EXPECT_NE(l.r.output.find("[critic] is not a section of keel launch; its sections are [reward], [learner], [actor]"),
            std::string::npos)
      << l.r.output;
  l = check_launch("launch_cfg_opt", "[learner]\nlearning-rate = 1e-5\n");
  EXPECT_EQ(l.r.code, 1);
  EXPECT_NE(l.r.output.find("the learner's options are not valid"), std::string::npos) << l.r.output;
  EXPECT_NE(l.r.output.find("learning-rate"), std::string::npos) << l.r.output;
  l = check_launch("launch_cfg_value", "[learner]\nestimator = ppo2\n[reward]\nprogram = python3 s.py\n");
  EXPECT_EQ(l.r.code, 1);
  EXPECT_NE(l.r.output.find("ppo2"), std::string::npos) << "a bad value, not only an unknown option\n" << l.r.output;
  l = check_launch("launch_cfg_fixed", "[learner]\nout = elsewhere\n");
  EXPECT_EQ(l.r.code, 1);
  EXPECT_NE(l.r.output.find("the learner's --out is set by keel launch itself (--out)"), std::string::npos) << l.r.output;
  l = check_launch("launch_cfg_top", "no-such-option = 1\n");
  EXPECT_EQ(l.r.code, 1);
  EXPECT_NE(l.r.output.find("unknown option 'no-such-option'"), std::string::npos) << l.r.output;
  l = check_launch("launch_cfg_quote", "", "--reward-args \"--program 'python3 x.py\"");
  EXPECT_EQ(l.r.code, 1);
  EXPECT_NE(l.r.output.find("unterminated ' quote"), std::string::npos) << l.r.output;
}

TEST(ShellWords, AnOptionsValueIsReadAndReplacedInEitherSpelling) {
  const std::vector<std::string> args = {"--a", "1", "--device", "cuda", "--b=2", "--device=cpu"};
  EXPECT_EQ(arg_value(args, "--device"), "cpu");  // the last one wins, as in Boost.Program_options
  EXPECT_EQ(arg_value(args, "--c"), "");
  const std::vector<std::string> want = {"--a", "1", "--b=2", "--device", "cuda:1"};
  EXPECT_EQ(with_option(args, "--device", "cuda:1"), want);
}

ActorLearnerJobOptions job_on_gpus(int actors, std::vector<std::string> actor_args, std::vector<std::string> learner_args = {}) {
  ActorLearnerJobOptions o;
  o.init = "sft";
  o.actors = actors;
  o.actor_args = std::move(actor_args);
  o.learner_args = std::move(learner_args);
  return o;
}

using Devices = std::vector<std::string>;

std::function<int()> gpus_are(int n) {
  return [n] { return n; };
}

TEST(ActorDevices, ActorsOnCudaTakeTheGpusTheHeadLeavesInTurn) {
  // The learner on cuda (GPU 0): 3 actors on a 4-GPU node take GPUs 1, 2, 3; a fourth wraps to 1.
  auto o = job_on_gpus(3, {"--device", "cuda"}, {"--device", "cuda"});
  EXPECT_EQ(actor_devices(o, gpus_are(4)), (Devices{"cuda:1", "cuda:2", "cuda:3"}));
  o.actors = 4;
  EXPECT_EQ(actor_devices(o, gpus_are(4)), (Devices{"cuda:1", "cuda:2", "cuda:3", "cuda:1"}));
  // The learner on GPU 2 and a reward model on GPU 0: the actors take 1 and 3.
  o = job_on_gpus(2, {"--device=cuda"}, {"--device", "cuda:2"});
  o.reward_args = {"--device", "cuda:0"};
  EXPECT_EQ(actor_devices(o, gpus_are(4)), (Devices{"cuda:1", "cuda:3"}));
  // A learner on the CPU, or on a GPU past the machine's (it fails at its own start), leaves every GPU to the actors.
  o = job_on_gpus(3, {"--device", "cuda"});
  EXPECT_EQ(actor_devices(o, gpus_are(2)), (Devices{"cuda:0", "cuda:1", "cuda:0"}));
  o.learner_args = {"--device", "cuda:7"};
  EXPECT_EQ(actor_devices(o, gpus_are(2)), (Devices{"cuda:0", "cuda:1", "cuda:0"}));
  // One GPU: everyone shares it.
  o = job_on_gpus(2, {"--device", "cuda"}, {"--device", "cuda"});
  EXPECT_EQ(actor_devices(o, gpus_are(1)), (Devices{"cuda:0", "cuda:0"}));
  // The config file's [actor] section counts as the actors' options.
  o = job_on_gpus(2, {});
  o.sections["actor"] = {"--device", "cuda"};
  EXPECT_EQ(actor_devices(o, gpus_are(3)), (Devices{"cuda:0", "cuda:1"}));
}

TEST(ActorDevices, GpusHeldElsewhereOnTheNodeAreLeftOut) {
  // Role actors on the Slurm head node: the first 2 GPUs are the learner ranks'; this launch
  // starts no learner, so its options hold no GPU.
  auto o = job_on_gpus(3, {"--device", "cuda"}, {"--device", "cuda:3"});
  o.role = "actors";
  o.head_gpus = 2;
  EXPECT_EQ(actor_devices(o, gpus_are(4)), (Devices{"cuda:2", "cuda:3", "cuda:2"}));
  // Role all: --head-gpus and the learner's GPU together; every GPU held: the actors share them all.
  o.role = "all";
  EXPECT_EQ(actor_devices(o, gpus_are(5)), (Devices{"cuda:2", "cuda:4", "cuda:2"}));
  o.head_gpus = 6;
  EXPECT_EQ(actor_devices(o, gpus_are(4)), (Devices{"cuda:0", "cuda:1", "cuda:2"}));
  o.head_gpus = -1;
  EXPECT_NE(test::keel_error_of([&] { actor_learner_processes(o, gpus_are(4)); }).find("--head-gpus must be at least 0"),
            std::string::npos);
}

// Sets environment variables for a scope; restores what was there.
class ScopedEnv {
 public:
  ScopedEnv(std::vector<std::pair<std::string, std::string>> vars) : vars_(std::move(vars)) {
    for (auto& [k, v] : vars_) {
      const char* old = std::getenv(k.c_str());
      saved_.push_back(old ? std::optional<std::string>(old) : std::nullopt);
      ::setenv(k.c_str(), v.c_str(), 1);
    }
  }
  ~ScopedEnv() {
    for (size_t i = 0; i < vars_.size(); ++i)
      saved_[i] ? ::setenv(vars_[i].first.c_str(), saved_[i]->c_str(), 1) : ::unsetenv(vars_[i].first.c_str());
  }

 private:
  std::vector<std::pair<std::string, std::string>> vars_;
  std::vector<std::optional<std::string>> saved_;
};

TEST(ActorDevices, ALearnersCudaIsTheGpuItResolvesToItself) {
  // Under a data-parallel environment the learner's `cuda` is its local rank's GPU (apply_runtime's
  // rule, default_cuda_index), and the launcher leaves that one out, not GPU 0.
  ScopedEnv env({{"WORLD_SIZE", "4"}, {"RANK", "3"}, {"LOCAL_RANK", "3"}});
  EXPECT_EQ(default_cuda_index(distributed_env_from_environment(), 4), 3);
  EXPECT_EQ(default_cuda_index(distributed_env_from_environment(), 2), 1);
  const auto o = job_on_gpus(3, {"--device", "cuda"}, {"--device", "cuda"});
  EXPECT_EQ(actor_devices(o, gpus_are(4)), (Devices{"cuda:0", "cuda:1", "cuda:2"}));
}

TEST(ActorDevices, AGivenDeviceStaysAndAListIsTakenInTurn) {
  EXPECT_EQ(actor_devices(job_on_gpus(2, {"--device", "cuda:3"}), gpus_are(4)), (Devices{"", ""}));
  int asked = 0;
  EXPECT_EQ(actor_devices(job_on_gpus(2, {}), [&] { return ++asked; }), (Devices{"", ""}));  // the CPU
  EXPECT_EQ(asked, 0) << "a CPU job does not ask CUDA for its GPUs";
  EXPECT_EQ(actor_devices(job_on_gpus(2, {"--device", "cuda"}), gpus_are(0)), (Devices{"", ""}));  // the actor says there is none
  auto o = job_on_gpus(3, {});
  o.actor_devices = "cuda:1, cpu";
  EXPECT_EQ(actor_devices(o, gpus_are(2)), (Devices{"cuda:1", "cpu", "cuda:1"}));
  o.actor_devices = "cuda:2,cpu";
  auto err = test::keel_error_of([&] { actor_devices(o, gpus_are(2)); });
  EXPECT_NE(err.find("--actor-devices: cuda:2, but this machine has 2 CUDA device(s)"), std::string::npos) << err;
  for (const std::string bad : {"gpu1", "cuda:", "cuda:1x", "cuda:01", "cuda:1,,cpu"}) {
    o.actor_devices = bad;
    err = test::keel_error_of([&] { actor_devices(o, gpus_are(2)); });
    EXPECT_NE(err.find("is not cpu, cuda or cuda:N"), std::string::npos) << bad << ": " << err;
  }
  o.actor_devices = "cpu";
  o.actor_args = {"--device", "cuda"};
  err = test::keel_error_of([&] { actor_devices(o, gpus_are(2)); });
  EXPECT_NE(err.find("--actor-devices cpu and the actors' --device cuda both say where the actors run"), std::string::npos)
      << err;
}

// The launcher's command lines: each actor's device once, the one assigned.
std::vector<std::string> actor_lines(const ActorLearnerJobOptions& o, int gpus) {
  std::vector<std::string> lines;
  for (const auto& c : actor_learner_processes(o, gpus_are(gpus)))
    if (c.name.rfind("actor-", 0) == 0) lines.push_back(shell_join(c.args));
  return lines;
}

TEST(ActorDevices, EachActorsCommandLineCarriesItsDeviceOnce) {
  auto o = job_on_gpus(3, {"--families", "sort", "--device", "cuda"}, {"--device", "cuda"});
  const auto lines = actor_lines(o, 3);
  ASSERT_EQ(lines.size(), 3u);
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string want = i == 1 ? "--device cuda:2" : "--device cuda:1";
    EXPECT_NE(lines[i].find(want), std::string::npos) << lines[i];
    EXPECT_EQ(lines[i].find("--device"), lines[i].rfind("--device")) << lines[i];
    EXPECT_NE(lines[i].find("--families sort"), std::string::npos) << lines[i];
  }
  o.actor_args = {"--families", "sort"};  // the CPU: the command lines as before, no --device added
  for (const auto& line : actor_lines(o, 3)) EXPECT_EQ(line.find("--device"), std::string::npos) << line;
  o.role = "head";  // no actors here: a list is not read
  o.actor_devices = "cuda:9";
  EXPECT_TRUE(actor_lines(o, 1).empty());
}

}  // namespace
}  // namespace keel
