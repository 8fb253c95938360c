// The actor-learner loop under faults, from the learning fixture's SFT model (tests/
// learning_fixture.h): PPO across network namespaces with CURVE losing an actor host, a chaos run
// whose actors, reward service and learner are killed and whose rollout socket gets garbage, and a
// run past a frozen actor and a frozen reward service. Part of the learning_test binary.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "replay/rollout_log.h"
#include "tests/learning_fixture.h"
#include "tests/ppo_support.h"
#include "tests/support/test_support.h"
#include "wire/channel.h"
#include "wire/codec.h"

namespace keel {
namespace {

using namespace learning;

// Multi-host PPO on one machine: network namespaces the test creates (a bridge in the learner's
// namespace, a veth to each actor host), so that every byte crosses an interface. The learner and
// reward service bind 10.77.0.1 (beyond loopback, hence CURVE with keys from `keel keys`); actor
// host A runs two actors, host B one; weights reach the actors as chunks over the network (no
// shared file). Host B's actor is killed mid-run. Asserted: the run finishes every update, learns
// as the single-machine runs above do (held-out reward does not collapse), every actor contributed
// and A's actors kept going with new weights after B died.
class Netns {
 public:
  Netns() : tag_(std::to_string(::getpid() % 100000)) {}
  ~Netns() {
    for (const auto& ns : names())
      test::run("for p in $(ip netns pids " + ns + " 2>/dev/null); do kill -9 $p; done; ip netns del " + ns + " 2>/dev/null");
  }
  std::string learner() const { return "keel-l" + tag_; }
  std::string host(char h) const { return std::string("keel-") + h + tag_; }
  std::vector<std::string> names() const { return {learner(), host('a'), host('b')}; }
  // Creates the namespaces and links; false (with the reason) when this machine does not allow it.
  bool create(std::string& why) {
    std::string s = "set -e; ";
    for (const auto& ns : names()) s += "ip netns add " + ns + "; ip -n " + ns + " link set lo up; ";
    s += "ip -n " + learner() + " link add br0 type bridge; ip -n " + learner() + " addr add 10.77.0.1/24 dev br0; ip -n " +
         learner() + " link set br0 up; ";
    int last = 2;
    for (char h : {'a', 'b'}) {
      const std::string v = std::string("v") + h;
      s += "ip -n " + learner() + " link add " + v + " type veth peer name eth0 netns " + host(h) + "; ";
      s += "ip -n " + learner() + " link set " + v + " master br0; ip -n " + learner() + " link set " + v + " up; ";
      s += "ip -n " + host(h) + " addr add 10.77.0." + std::to_string(last++) + "/24 dev eth0; ip -n " + host(h) +
           " link set eth0 up; ";
    }
    auto r = test::run(s);
    why = r.output;
    return r.code == 0;
  }

 private:
  std::string tag_;
};

TEST(Learning, PpoAcrossNetworkNamespacesWithCurveSurvivesLosingAnActorHost) {
  SFT_MODEL_OR_FAIL(sft);
  const std::string dir = test::temp_dir("multihost");
  Netns net;
  std::string why;
  ASSERT_TRUE(net.create(why)) << "cannot create network namespaces (root and iproute2 needed): " << why;
  for (const std::string k : {"server", "clients/actor-a", "clients/actor-b"}) {
    auto r = test::keel("keys generate --out " + dir + "/keys/" + k);
    ASSERT_EQ(r.code, 0) << r.output;
  }
  const std::string keys = dir + "/keys", ep = "tcp://10.77.0.1:";
  const int port = 6355;  // in the test's own network namespaces, where every port is free
  std::ostringstream learner_cmd;
  learner_cmd << "ip netns exec " << net.learner() << " " << test::keel_bin() << " launch --out " << dir << " --init " << sft
              << " --actors 0 --host 10.77.0.1 --base-port " << port << " --curve-key " << keys << "/server.secret --curve-allow "
              << keys << "/clients --ppo-args '--updates 20 --rollouts-per-update 64 --eval-every 40 --eval-per-family 100"
              << " --eval-samples 2 --eval-families sort --lr 5e-5 --kl-coef 0.02 --shared-dir none --rollout-log " << dir
              << "/rollouts.h5' > " << dir << "/launch.log 2>&1";
  auto actor = [&](char host, int rank) {
    std::ostringstream c;
    c << "ip netns exec " << net.host(host) << " " << test::keel_bin() << " actor --model " << sft << " --rank " << rank
      << " --world 3 --rollouts " << ep << port << " --weights " << ep << port + 1 << " --chunks " << ep << port + 2
      << " --reward " << ep << port + 5 << " --threads 1 --batch-prompts 16 --families sort --curve-key " << keys
      << "/clients/actor-" << host << ".secret --curve-server-key " << keys << "/server.pub > " << dir << "/actor-" << rank
      << ".log 2>&1 &";
    return c.str();
  };
  std::thread killer([&] {
    for (auto [h, rank] : {std::pair{'a', 0}, {'a', 1}, {'b', 2}}) test::run(actor(h, rank));
    // Mid-run, once host B's actor has had time to contribute (asserted below).
    test::wait_until([&] { return test::published_versions(dir) >= 7; }, std::chrono::minutes(5));
    test::run("for p in $(ip netns pids " + net.host('b') + "); do kill -9 $p; done");  // actor host B is lost
  });
  auto r = test::run(learner_cmd.str());
  killer.join();
  test::run("for p in $(ip netns pids " + net.host('a') + "); do kill -TERM $p; done; sleep 1");
  ASSERT_EQ(r.code, 0) << test::read_text(dir + "/launch.log") << test::read_text(dir + "/logs/learner.log");
  const auto learner_log = test::read_text(dir + "/logs/learner.log");
  EXPECT_NE(learner_log.find("transport: CURVE, 2 allowed client key(s)"), std::string::npos) << learner_log;

  const auto run = test::read_ppo_run(dir + "/learner/metrics.jsonl");
  ASSERT_EQ(run.version.size(), 20u);
  for (size_t i = 0; i < run.version.size(); ++i) EXPECT_EQ(run.version[i], static_cast<double>(i + 1));
  ASSERT_GE(run.eval_reward.size(), 2u);
  std::cerr << "PPO across namespaces: held-out sort reward " << run.eval_reward.front() << " -> " << run.eval_reward.back()
            << "\n";
  EXPECT_GE(run.eval_reward.back(), run.eval_reward.front() - 0.05) << "held-out reward collapsed";

  const auto log = read_rollout_log(dir + "/rollouts.h5");
  uint64_t newest[3] = {0, 0, 0};
  int64_t count[3] = {0, 0, 0};
  for (const auto& row : log.rows) {
    ASSERT_LT(row.actor_id, 3u);
    ++count[row.actor_id];
    newest[row.actor_id] = std::max(newest[row.actor_id], row.policy_version);
  }
  std::cerr << "rollouts per actor: " << count[0] << " " << count[1] << " " << count[2] << "; newest version " << newest[0] << " "
            << newest[1] << " " << newest[2] << "\n";
  for (int a = 0; a < 3; ++a) EXPECT_GT(count[a], 0) << "actor " << a << " never reached the learner";
  EXPECT_GE(std::max(newest[0], newest[1]), 15u) << "host A's actors did not get new weights over the network";
  EXPECT_LT(newest[2], std::max(newest[0], newest[1])) << "host B's actor was killed; it cannot hold the newest weights";
}

// Sends what the learner's rollout socket must refuse: bytes that are no message, and a message
// whose envelope names a version keel does not speak. True once sent.
bool send_garbage(const std::string& rollouts) {
  auto push = wire::zmq_connect(wire::SocketKind::kPush, rollouts);
  push->send("this is not a rollout batch");
  auto bytes = wire::encode({"intruder", wire::Heartbeat{1, 1}});
  for (size_t i = 16; i + 2 <= bytes.size(); i += 8)
    if (bytes[i] == wire::kWireVersion && bytes[i + 1] == 0) {
      bytes[i] = 9;  // the envelope's version field
      break;
    }
  push->send(bytes);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // delivered before the socket closes
  return true;
}

// Chaos: during a PPO run through `keel launch`, a random actor is killed every few seconds, the
// reward service is killed once and the learner is killed once (SIGKILL each); the launcher
// restarts them all, the learner resuming from its last checkpoint; then garbage and a message of
// an unknown version reach the learner's rollout socket. Asserted: the run finishes; the bad
// messages are counted as rejected;
// the published versions are 1..20 with no gap or repeat; no rollout was taken for training twice
// (rollout log's trained_uid) and no actor sent the same rollout twice across its restarts (uid);
// the learner's counter equals the updates' rollouts; the final held-out reward is within noise of
// the undisturbed one-actor run above.
TEST(Learning, ChaosPpoRunLosesNothingAndCountsNothingTwice) {
  SFT_MODEL_OR_FAIL(sft);
  const auto& logged = logged_ppo_run();
  ASSERT_EQ(logged.result.code, 0) << logged.result.output;
  const auto undisturbed = test::read_ppo_run(logged.dir + "/learner/metrics.jsonl");
  ASSERT_FALSE(undisturbed.eval_reward.empty()) << logged.result.output;
  const std::string dir = test::temp_dir("chaos");
  const int port = test::free_port_block(6);  // keel launch takes base..base+5
  const std::string rollouts = "tcp://127.0.0.1:" + std::to_string(port);
  const std::string cmd = "launch --out " + dir + " --init " + sft + " --actors 3 --base-port " + std::to_string(port) +
                          " --ppo-args '--updates 20 --rollouts-per-update 64 --eval-every 40 --eval-per-family 100"
                          " --eval-samples 2 --eval-families sort --lr 5e-5 --kl-coef 0.02 --rollout-log " +
                          dir + "/rollouts.h5' --actor-args '--batch-prompts 16 --families sort'";
  std::atomic<bool> done{false};
  int actor_kills = 0;
  bool learner_killed = false, garbage_sent = false;
  std::thread chaos([&] {
    std::mt19937 rng(7);
    const auto start = std::chrono::steady_clock::now();
    bool reward_killed = false;
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::seconds(4));
      if (done.load()) break;
      const int rank = static_cast<int>(rng() % 3);
      // "[-]-" matches "--" in the target's command line but not in this shell's own.
      if (test::run("pkill -9 -f -- '[-]-rank " + std::to_string(rank) + " --world 3 --rollouts " + rollouts + "'").code == 0)
        ++actor_kills;
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!reward_killed && t > 12) {
        test::run("pkill -9 -f -- 'reward serve [-]-kind task --endpoint tcp://127.0.0.1:" + std::to_string(port + 5) + "'");
        reward_killed = true;
      }
      const auto published = test::read_ppo_run(dir + "/learner/metrics.jsonl").version.size();
      if (!learner_killed && published >= 6) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // into the next update
        learner_killed = test::run("pkill -9 -f -- '[-]-rollouts-endpoint " + rollouts + "'").code == 0;
      }
      // Once the learner has resumed, bad messages on its rollout socket: counted, never trained on.
      if (learner_killed && !garbage_sent && published >= 10) garbage_sent = send_garbage(rollouts);
    }
  });
  auto r = test::keel(cmd);
  done.store(true);
  chaos.join();
  ASSERT_EQ(r.code, 0) << r.output;
  std::cerr << "chaos: " << actor_kills << " actor kills, learner killed " << learner_killed << "\n";
  EXPECT_GE(actor_kills, 3);
  EXPECT_TRUE(learner_killed);
  EXPECT_TRUE(garbage_sent);
  EXPECT_NE(r.output.find("reward exited"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("learner exited"), std::string::npos) << r.output;
  EXPECT_NE(test::read_text(dir + "/logs/learner.log").find("resumed from"), std::string::npos);

  const auto run = test::read_ppo_run(dir + "/learner/metrics.jsonl");
  ASSERT_EQ(run.version.size(), 20u) << "a version was lost or repeated";
  for (size_t i = 0; i < run.version.size(); ++i) EXPECT_EQ(run.version[i], static_cast<double>(i + 1));
  EXPECT_GE(run.rejected, 2.0) << "garbage and wrong-version messages must be counted as rejected";
  double trained_counter = 0;
  {
    std::ifstream f(dir + "/learner/metrics.jsonl");
    std::string line;
    while (std::getline(f, line)) {
      auto j = nlohmann::json::parse(line);
      if (j.contains("ppo/rollouts_trained")) trained_counter = j["ppo/rollouts_trained"].get<double>();
    }
  }
  EXPECT_EQ(trained_counter, 20.0 * 64);

  const auto log = read_rollout_log(dir + "/rollouts.h5");
  std::set<uint64_t> received, trained;
  for (const auto& row : log.rows)
    EXPECT_TRUE(received.insert(row.uid).second) << "an actor sent rollout " << row.uid << " twice";
  for (const auto& t : log.trained) {
    EXPECT_TRUE(trained.insert(t.uid).second) << "rollout " << t.uid << " taken for training twice";
    EXPECT_TRUE(received.count(t.uid)) << "trained rollout " << t.uid << " never arrived";
  }
  // Every completed update took 64; the update cut short by the kill took at most 64 more.
  EXPECT_GE(log.trained.size(), 20u * 64);
  EXPECT_LE(log.trained.size(), 21u * 64);

  ASSERT_GE(run.eval_reward.size(), 2u);
  const double after = run.eval_reward.back(), calm = undisturbed.eval_reward.back();
  std::cerr << "chaos: held-out sort reward " << run.eval_reward.front() << " -> " << after << " (undisturbed run: " << calm
            << ")\n";
  EXPECT_NEAR(after, calm, 0.1) << "the disturbed run's reward is outside the noise of the undisturbed one";
  EXPECT_GE(after, run.eval_reward.front() - 0.05);
}

// Liveness under flow control: an actor frozen with SIGSTOP keeps its sockets open but sends
// nothing, so what it was granted must lapse after --peer-timeout and the other actor carry the
// run; the reward service frozen for 30 s stalls every actor's scoring, and the run goes on once it
// resumes. Asserted: the run finishes with versions 1..12 and no gap, and at least 3 versions were
// published while actor-0 was frozen.
TEST(Learning, PpoGoesOnPastAFrozenActorAndAFrozenRewardService) {
  SFT_MODEL_OR_FAIL(sft);
  const std::string dir = test::temp_dir("frozen");
  const int port = test::free_port_block(6);
  const std::string rollouts = "tcp://127.0.0.1:" + std::to_string(port);
  const std::string cmd = "launch --out " + dir + " --init " + sft + " --actors 2 --base-port " + std::to_string(port) +
                          " --ppo-args '--updates 12 --rollouts-per-update 32 --eval-at-start false --eval-every 0"
                          " --eval-per-family 20 --eval-samples 1 --eval-families sort --peer-timeout 3'"
                          " --actor-args '--batch-prompts 16 --families sort'";
  std::atomic<bool> done{false};
  size_t frozen_at = 0, thawed_at = 0;
  auto versions = [&] { return test::read_ppo_run(dir + "/learner/metrics.jsonl").version.size(); };
  // Waits until `v` versions are published, the run ends, or 120 s pass (the run is stuck).
  auto wait_for = [&](size_t v) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!done.load() && versions() < v && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
  };
  std::thread chaos([&] {
    const std::string actor0 = "'[-]-rank 0 --world 2 --rollouts " + rollouts + "'";
    const std::string reward = "'reward serve [-]-kind task --endpoint tcp://127.0.0.1:" + std::to_string(port + 5) + "'";
    wait_for(2);
    test::run("pkill -STOP -f -- " + actor0);
    frozen_at = versions();
    wait_for(frozen_at + 3);
    test::run("pkill -STOP -f -- " + reward);
    std::this_thread::sleep_for(std::chrono::seconds(30));
    test::run("pkill -CONT -f -- " + reward);
    thawed_at = versions();
    test::run("pkill -CONT -f -- " + actor0);
  });
  auto r = test::keel(cmd);
  done.store(true);
  chaos.join();
  ASSERT_EQ(r.code, 0) << r.output;
  const auto run = test::read_ppo_run(dir + "/learner/metrics.jsonl");
  ASSERT_EQ(run.version.size(), 12u) << r.output;
  for (size_t i = 0; i < run.version.size(); ++i) EXPECT_EQ(run.version[i], static_cast<double>(i + 1));
  std::cerr << "frozen: actor-0 frozen at version " << frozen_at << ", thawed at " << thawed_at << "\n";
  EXPECT_GE(thawed_at, frozen_at + 3) << "the run must go on while an actor is frozen";
}

}  // namespace
}  // namespace keel
