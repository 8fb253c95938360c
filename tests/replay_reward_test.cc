// Replay (staleness bound, HDF5 rollout log read back by keel and by h5py) and rewards (task checker,
// a user's program over the line protocol, the batching service over ZeroMQ). Suites *AgainstPython
// run /usr/bin/python3 (CTest label `reference`).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "replay/rollout_log.h"
#include "learner/rollout_service.h"
#include "replay/rollout_queue.h"
#include "reward/scorer.h"
#include "reward/service.h"
#include "tests/support/test_support.h"
#include "wire/channel.h"

namespace keel {
namespace {

wire::Rollout rollout(uint64_t version, int32_t token) {
  wire::Rollout r;
  r.prompt_tokens = {1, token};
  r.response_tokens = {token, token + 1, 2};
  r.logprobs = {-0.5f, -0.25f, -0.125f};
  r.policy_version = version;
  r.actor_id = 1;
  r.score = static_cast<float>(token);
  r.group_id = 7;
  r.uid = 1000 + static_cast<uint64_t>(token);
  return r;
}

TEST(Replay, StaleRolloutsAreDroppedOrKeptAndCounted) {
  std::atomic<bool> stop{false};
  RolloutQueue drop({1, true, 100});
  for (uint64_t v : {3u, 4u, 5u, 2u}) drop.push(rollout(v, 10));
  auto got = drop.take(4, 5, 50, stop);  // versions 3 and 2 lag learner version 5 by more than 1
  EXPECT_EQ(got.size(), 2u);
  EXPECT_EQ(drop.stats().dropped_stale, 2);
  RolloutQueue keep({1, false, 100});
  for (uint64_t v : {3u, 5u}) keep.push(rollout(v, 10));
  EXPECT_EQ(keep.take(2, 5, 50, stop).size(), 2u);
  EXPECT_EQ(keep.stats().kept_stale, 1);
  EXPECT_DOUBLE_EQ(keep.stats().staleness_sum, 2.0);
}

// Three rollouts appended over two openings of `path` (learner versions 2 and 3), two of them marked
// trained at version 4.
void write_rollout_log(const std::string& path) {
  {
    RolloutLog log(path, "sentencepiece:abc");
    log.append({rollout(1, 10), rollout(2, 20)}, 2);
  }
  {
    RolloutLog log(path, "sentencepiece:abc");  // reopened: appends
    log.append({rollout(3, 30)}, 3);
    log.mark_trained({1010, 1030}, 4);
    EXPECT_EQ(log.size(), 3);
  }
}

TEST(Replay, RolloutLogAppendsAcrossOpeningsAndReadsBack) {
  const std::string dir = test::temp_dir("rollout_log");
  write_rollout_log(dir + "/log.h5");
  const auto back = read_rollout_log(dir + "/log.h5");
  ASSERT_EQ(back.rows.size(), 3u);
  EXPECT_EQ(back.rows[2].uid, 1030u);
  ASSERT_EQ(back.trained.size(), 2u);
  EXPECT_EQ(back.trained[1].uid, 1030u);
  EXPECT_EQ(back.trained[1].version, 4u);
}

TEST(ReplayAgainstPython, RolloutLogIsReadableByH5py) {
  const std::string dir = test::temp_dir("rollout_log_h5py");
  write_rollout_log(dir + "/log.h5");
  const std::string py =
      "import h5py\n"
      "f = h5py.File('" +
      dir +
      "/log.h5', 'r')\n"
      "po, ro = f['prompt_offsets'][:], f['response_offsets'][:]\n"
      "assert f.attrs['format_version'] == 2, f.attrs['format_version']\n"
      "assert list(f['uid'][:]) == [1010, 1020, 1030]\n"
      "assert list(f['trained_uid'][:]) == [1010, 1030] and list(f['trained_version'][:]) == [4, 4]\n"
      "assert list(po) == [0, 2, 4, 6], list(po)\n"
      "assert list(f['response_tokens'][ro[2]:ro[3]]) == [30, 31, 2]\n"
      "assert list(f['policy_version'][:]) == [1, 2, 3]\n"
      "assert list(f['score'][:]) == [10.0, 20.0, 30.0]\n"
      "assert abs(f['logprobs'][ro[1]+1] + 0.25) < 1e-7\n"
      "assert list(f['learner_version'][:]) == [2, 2, 3]\n"
      "print('ok')\n";
  test::write_text(dir + "/check.py", py);
  auto r = test::run("/usr/bin/python3 " + dir + "/check.py");
  EXPECT_EQ(r.code, 0) << r.output;
}

TEST(Reward, TaskScorerAndMissingEosPenalty) {
  auto s = make_task_scorer();
  std::vector<wire::ScoreItem> items = {{"Compute 2 + 3.", "5", {}, {}, true},
                                        {"Compute 2 + 3.", "6", {}, {}, true},
                                        {"Sort the words: b a", "a b", {}, {}, false},
                                        {"Write a poem", "roses", {}, {}, true}};
  auto r = s->score(items);
  apply_missing_eos_penalty(items, r, 0.5f);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_FLOAT_EQ(r[0].score, 1.0f);
  EXPECT_FLOAT_EQ(r[1].score, 0.0f);
  EXPECT_FLOAT_EQ(r[2].score, 0.5f);  // correct, but no EOS
  EXPECT_EQ(r[3].parts.at(0).first, "unknown_task");
}

TEST(RewardAgainstPython, UserProgramSpeaksTheLineProtocol) {
  const std::string dir = test::temp_dir("reward_program");
  test::write_text(
      dir + "/r.py",
      "import json, sys\n"
      "for line in sys.stdin:\n"
      "    item = json.loads(line)\n"
      "    print(json.dumps({'score': len(item['response']), 'parts': {'len': len(item['response'])}}), flush=True)\n");
  auto s = make_program_scorer("/usr/bin/python3 " + dir + "/r.py", 10000);
  auto r = s->score({{"p", "abc", {}, {}, true}, {"p", "hello", {}, {}, true}});
  ASSERT_EQ(r.size(), 2u);
  EXPECT_FLOAT_EQ(r[0].score, 3.0f);
  EXPECT_FLOAT_EQ(r[1].score, 5.0f);
  EXPECT_EQ(r[1].parts.at(0).first, "len");
}

TEST(Reward, UserProgramAnsweringGarbageIsAClearError) {
  // A program that answers garbage gives a clear error, and the next batch restarts it.
  const std::string dir = test::temp_dir("reward_program_garbage");
  test::write_text(dir + "/bad.sh", "while read l; do echo not-json; done\n");
  auto bad = make_program_scorer("sh " + dir + "/bad.sh", 5000);
  try {
    bad->score({{"p", "x", {}, {}, true}});
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("not a JSON object"), std::string::npos) << e.what();
  }
}

TEST(Reward, ServiceBatchesRequestsFromSeveralClients) {
  auto scorer = make_task_scorer();
  RewardServiceOptions o;
  o.endpoint = "tcp://127.0.0.1:" + std::to_string(test::free_port_block(1));
  o.max_batch = 4;
  o.max_wait_ms = 200;
  auto server = wire::zmq_bind(wire::SocketKind::kRouter, o.endpoint);
  std::atomic<bool> stop{false};
  RewardServiceStats stats;
  std::thread t([&] { stats = serve_rewards(o, *scorer, *server, stop); });
  std::vector<std::unique_ptr<wire::Channel>> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(wire::zmq_connect(wire::SocketKind::kDealer, o.endpoint));
    wire::ScoreRequest q{static_cast<uint64_t>(i + 1),
                         {{"Compute 1 + 1.", i == 0 ? "2" : "3", {}, {}, true}, {"Count the words: a b", "2", {}, {}, true}}};
    ASSERT_TRUE(wire::send_message(*clients.back(), {"client", q}));
  }
  clients[0]->send("garbage");
  wire::ReceiveStats rs;
  for (int i = 0; i < 2; ++i) {
    auto m = wire::receive(*clients[static_cast<size_t>(i)], 5000, rs);
    ASSERT_TRUE(m);
    const auto& rep = std::get<wire::ScoreReply>(m->body);
    EXPECT_EQ(rep.request_id, static_cast<uint64_t>(i + 1));
    ASSERT_EQ(rep.scores.size(), 2u);
    EXPECT_FLOAT_EQ(rep.scores[0], i == 0 ? 1.0f : 0.0f);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  t.join();
  EXPECT_EQ(stats.items, 4);
  EXPECT_EQ(stats.batches, 1);  // both requests scored together
  EXPECT_EQ(stats.receive.rejected, 1);
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

// The learner's rollout service hears actors' heartbeats: a peer that stops is reported silent.
TEST(Replay, RolloutServiceReportsASilentActor) {
  RolloutServiceOptions o = test::inproc_rollout_service("hb");
  o.peer_timeout_s = 1.0;
  RolloutService service(o, ReplayOptions{});
  auto steady = std::make_unique<wire::HeartbeatSender>(o.rollouts_endpoint, "actor-0", std::chrono::milliseconds(200));
  auto dying = std::make_unique<wire::HeartbeatSender>(o.rollouts_endpoint, "actor-1", std::chrono::milliseconds(200));
  EXPECT_TRUE(test::wait_until([&] { return service.stats().peers_alive == 2; }, std::chrono::seconds(5)));
  dying.reset();  // actor-1 goes quiet
  EXPECT_TRUE(test::wait_until([&] { return service.stats().peers_silent == 1; }, std::chrono::seconds(5)));
  EXPECT_EQ(service.stats().peers_alive, 1);
  service.stop();
}

}  // namespace
}  // namespace keel
