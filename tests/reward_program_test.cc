// A user's reward program may misbehave in any way without harming the reward service: ignore
// SIGTERM, print lines nobody asked for, answer before reading its whole batch, answer out of order
// (matched by echoed id), print NaN or a number beyond float range. Each case fails only the batch
// (or the actor's request) it concerns, is counted and logged, and nothing is mis-scored.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "reward/scorer.h"
#include "reward/service.h"
#include "tests/support/test_support.h"
#include "wire/channel.h"

namespace keel {
namespace {

using Clock = std::chrono::steady_clock;

std::string program(const std::string& name, const std::string& script) {
  const std::string dir = test::temp_dir("reward_" + name);
  test::write_text(dir + "/r.sh", script);
  return "sh " + dir + "/r.sh";
}

wire::ScoreItem item(const std::string& response) { return {"p", response, {}, {}, true}; }

// Scores each response as the number it spells; misbehaves on the responses its name says.
const char* kMisbehaving =
    "while IFS= read -r l; do\n"
    "  r=$(printf '%s' \"$l\" | sed 's/.*\"response\":\"\\([^\"]*\\)\".*/\\1/')\n"
    "  case \"$r\" in\n"
    "    extra) echo '{\"score\": 1}'; echo '{\"score\": 1}';;\n"
    "    nan) echo '{\"score\": NaN}';;\n"
    "    huge) echo '{\"score\": 1e39}';;\n"
    "    *) echo \"{\\\"score\\\": $r}\";;\n"
    "  esac\n"
    "done\n";

TEST(RewardProgram, NanHugeAndExtraLinesFailTheBatchNamingWhy) {
  auto s = make_program_scorer(program("misbehaving", kMisbehaving), 3000);
  const auto good = s->score({item("3"), item("4")});
  ASSERT_EQ(good.size(), 2u);
  EXPECT_FLOAT_EQ(good[1].score, 4.0f);
  EXPECT_NE(test::keel_error_of([&] { s->score({item("nan")}); }).find("not a JSON object"), std::string::npos);
  EXPECT_NE(test::keel_error_of([&] { s->score({item("huge")}); }).find("not a finite 32-bit number"), std::string::npos);
  EXPECT_NE(test::keel_error_of([&] {
              s->score({item("extra"), item("5")});
            }).find("more than one line per item"),
            std::string::npos);
  // The program was restarted: the next batch is scored right, nothing shifted.
  const auto after = s->score({item("6"), item("7")});
  EXPECT_FLOAT_EQ(after[0].score, 6.0f);
  EXPECT_FLOAT_EQ(after[1].score, 7.0f);
}

TEST(RewardProgram, AnswersAreMatchedByEchoedIdInAnyOrder) {
  // Answers each pair of lines in reverse order, echoing the ids.
  auto s = make_program_scorer(program("reorder",
                                       "while IFS= read -r a && IFS= read -r b; do\n"
                                       "  for l in \"$b\" \"$a\"; do\n"
                                       "    id=$(printf '%s' \"$l\" | sed 's/.*\"id\":\\([0-9]*\\).*/\\1/')\n"
                                       "    r=$(printf '%s' \"$l\" | sed 's/.*\"response\":\"\\([^\"]*\\)\".*/\\1/')\n"
                                       "    echo \"{\\\"id\\\": $id, \\\"score\\\": $r}\"\n"
                                       "  done\n"
                                       "done\n"),
                               3000);
  for (int batch = 0; batch < 2; ++batch) {
    const auto r = s->score({item("3"), item("7"), item("9"), item("2")});
    ASSERT_EQ(r.size(), 4u);
    EXPECT_FLOAT_EQ(r[0].score, 3.0f);
    EXPECT_FLOAT_EQ(r[1].score, 7.0f);
    EXPECT_FLOAT_EQ(r[2].score, 9.0f);
    EXPECT_FLOAT_EQ(r[3].score, 2.0f);
  }
}

TEST(RewardProgram, AProgramAnsweringBeforeReadingAMegabyteBatchDoesNotDeadlock) {
  // Each answer is 20 kB and comes right after its line: both pipes fill unless keel reads while
  // it writes.
  auto s =
      make_program_scorer(program("early",
                                  "pad=$(head -c 20000 /dev/zero | tr '\\\\0' x)\n"
                                  "while IFS= read -r l; do echo \"{\\\"score\\\": 1, \\\"note\\\": \\\"$pad\\\"}\"; done\n"),
                          20000);
  std::vector<wire::ScoreItem> items(100, item(std::string(10000, 'r')));
  const auto t0 = Clock::now();
  const auto r = s->score(items);
  EXPECT_EQ(r.size(), 100u);
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(15));
}

TEST(RewardProgram, AProgramThatIgnoresSigtermAndHangsIsKilledWithItsChildren) {
  const std::string digits = "1001" + std::to_string(::getpid() % 1000);
  const std::string marker = "sleep " + digits;
  auto s = make_program_scorer(program("ignores_term", "trap '' TERM\n" + marker + "\n"), 500);
  const auto t0 = Clock::now();
  EXPECT_NE(test::keel_error_of([&] { s->score({item("1")}); }).find("within the batch deadline of 500 ms"), std::string::npos);
  s.reset();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5)) << "stopping the program must not wait for it";
  // "[s]leep" matches the program but not this pgrep's own shell.
  EXPECT_NE(test::run("pgrep -f '[s]leep " + digits + "'").code, 0) << "the program's child survived";
}

TEST(RewardProgram, OneActorsBadItemsFailOnlyItsOwnRequest) {
  auto scorer = make_program_scorer(program("service", kMisbehaving), 3000);
  RewardServiceOptions o;
  o.endpoint = "tcp://127.0.0.1:" + std::to_string(test::free_port_block(1));
  o.max_batch = 4;
  o.max_wait_ms = 300;
  auto server = wire::zmq_bind(wire::SocketKind::kRouter, o.endpoint);
  std::atomic<bool> stop{false};
  RewardServiceStats stats;
  std::thread t([&] { stats = serve_rewards(o, *scorer, *server, stop); });
  auto good = wire::zmq_connect(wire::SocketKind::kDealer, o.endpoint);
  auto bad = wire::zmq_connect(wire::SocketKind::kDealer, o.endpoint);
  ASSERT_TRUE(wire::send_message(*bad, {"actor-1", wire::ScoreRequest{2, {item("extra"), item("8")}}}));
  ASSERT_TRUE(wire::send_message(*good, {"actor-0", wire::ScoreRequest{1, {item("3"), item("5")}}}));
  wire::ReceiveStats rs;
  auto g = wire::receive(*good, 10000, rs);
  auto b = wire::receive(*bad, 10000, rs);
  stop = true;
  t.join();
  ASSERT_TRUE(g && b);
  const auto& gr = std::get<wire::ScoreReply>(g->body);
  EXPECT_EQ(gr.error, "");
  ASSERT_EQ(gr.scores.size(), 2u);
  EXPECT_FLOAT_EQ(gr.scores[0], 3.0f);
  EXPECT_FLOAT_EQ(gr.scores[1], 5.0f);
  const auto& br = std::get<wire::ScoreReply>(b->body);
  EXPECT_NE(br.error.find("more than one line per item"), std::string::npos) << br.error;
  EXPECT_TRUE(br.scores.empty());
  EXPECT_EQ(stats.failed, 1);
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

// Scores 1 when the response equals the prompt line's own "answer" field (sent under "fields");
// a line without that field makes it fail as a user's script would, with a message on stderr.
const char* kAnswerChecker =
    "while IFS= read -r l; do\n"
    "  case \"$l\" in *'\"answer\":'*) ;; *) echo \"KeyError: 'answer' in $l\" >&2; exit 1;; esac\n"
    "  a=$(printf '%s' \"$l\" | sed 's/.*\"answer\":\"\\([^\"]*\\)\".*/\\1/')\n"
    "  r=$(printf '%s' \"$l\" | sed 's/.*\"response\":\"\\([^\"]*\\)\".*/\\1/')\n"
    "  if [ \"$a\" = \"$r\" ]; then echo '{\"score\": 1}'; else echo '{\"score\": 0}'; fi\n"
    "done\n";

TEST(RewardProgram, ThePromptLinesFieldsReachTheProgramAndItsStderrReachesTheUser) {
  auto s = make_program_scorer(program("fields", kAnswerChecker), 3000);
  wire::ScoreItem right{"Capital of France?", "Paris", {}, {}, true, R"({"answer":"Paris","tag":"geo"})"};
  wire::ScoreItem wrong{"Capital of Peru?", "Paris", {}, {}, true, R"({"answer":"Lima","tag":"geo"})"};
  const auto r = s->score({right, wrong});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_FLOAT_EQ(r[0].score, 1.0f);
  EXPECT_FLOAT_EQ(r[1].score, 0.0f);
  wire::ScoreItem lacking{"Capital of Chile?", "Santiago", {}, {}, true, R"({"tag":"geo"})"};
  const auto err = test::keel_error_of([&] { s->score({lacking}); });
  EXPECT_NE(err.find("its stderr ended with: KeyError: 'answer'"), std::string::npos) << err;
  wire::ScoreItem garbled{"p", "x", {}, {}, true, "not json"};
  EXPECT_NE(test::keel_error_of([&] { s->score({garbled}); }).find("prompt fields are not a JSON object"), std::string::npos);
}

}  // namespace
}  // namespace keel
