// A researcher's job as configuration: command lines split with the shell's quoting rules, and a
// keel launch config file with one section per role whose values (a reward command with
// arguments, a path with a space) reach each process whole; every bad part named before a process
// starts.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/shell_words.h"
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

}  // namespace
}  // namespace keel
