// The Slurm script (launch/slurm/keel_ppo.sbatch) for real: the test starts a single-node Slurm
// cluster of its own on loopback (munged, slurmctld, slurmd from Debian's slurm-wlm and munge, with
// a configuration in a temporary directory), submits the script with sbatch --wait, and checks the
// run: two data-parallel learner ranks rendezvoused from Slurm's variables, actors and the reward
// service ran as job steps, a learner rank killed mid-run made the script restart the group from
// its last checkpoint, and the learner published every version once. Skipped, saying so, only where
// the Slurm daemons are not installed or cannot run (not root).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/ppo_support.h"
#include "tests/support/test_support.h"

namespace keel {
namespace {

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream is(text);
  std::string line;
  while (std::getline(is, line))
    if (!line.empty()) out.push_back(line);
  return out;
}

class SlurmCluster {
 public:
  explicit SlurmCluster(const std::string& dir) : dir_(dir) {}
  ~SlurmCluster() {
    test::run(env() + "scancel --full --user=root 2>/dev/null; sleep 1");
    for (const char* pid : {"/slurmd.pid", "/slurmctld.pid"}) test::run("kill $(cat " + dir_ + pid + ") 2>/dev/null");
    test::run("munged --stop --socket=" + dir_ + "/munge/munge.sock 2>/dev/null");
  }
  std::string env() const { return "SLURM_CONF=" + dir_ + "/slurm.conf "; }

  // Starts the daemons; false with the reason when this machine cannot run them.
  bool start(std::string& why) {
    for (const char* tool : {"munged", "slurmctld", "slurmd", "sbatch", "sinfo"})
      if (test::run(std::string("command -v ") + tool).code != 0) {
        why = std::string(tool) + " is not installed (scripts/setup.sh installs slurm-wlm and munge)";
        return false;
      }
    if (::geteuid() != 0) {
      why = "slurmd needs root to start job steps";
      return false;
    }
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    std::filesystem::create_directories(dir_ + "/munge");
    for (const char* d : {"/spool", "/state", "/log"}) std::filesystem::create_directories(dir_ + d);
    const int ports = test::free_port_block(2);  // slurmctld, slurmd
    const std::string conf =
        "ClusterName=keeltest\nSlurmctldHost=" + std::string(host) + "(127.0.0.1)\nSlurmctldPort=" + std::to_string(ports) +
        "\nSlurmdPort=" + std::to_string(ports + 1) +
        "\n"
        "AuthType=auth/munge\nAuthInfo=socket=" +
        dir_ +
        "/munge/munge.sock\nCredType=cred/munge\nSlurmUser=root\n"
        "SlurmdUser=root\nStateSaveLocation=" +
        dir_ + "/state\nSlurmdSpoolDir=" + dir_ + "/spool\nSlurmctldPidFile=" + dir_ + "/slurmctld.pid\nSlurmdPidFile=" + dir_ +
        "/slurmd.pid\nSlurmctldLogFile=" + dir_ + "/log/slurmctld.log\nSlurmdLogFile=" + dir_ +
        "/log/slurmd.log\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n"
        "AccountingStorageType=accounting_storage/none\nSelectType=select/"
        "cons_tres\nSelectTypeParameters=CR_CPU\nMpiDefault=none\n"
        "ReturnToService=2\nSchedulerType=sched/builtin\nNodeName=" +
        std::string(host) +
        " NodeAddr=127.0.0.1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 State=UNKNOWN\n"
        "PartitionName=debug Nodes=" +
        std::string(host) + " Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4\n";
    test::write_text(dir_ + "/slurm.conf", conf);
    auto r = test::run("set -e; cd " + dir_ +
                       "; chmod 700 munge; dd if=/dev/urandom of=munge/munge.key bs=1024 count=1 2>/dev/null;"
                       " chmod 400 munge/munge.key; munged -f --key-file=munge/munge.key --socket=" +
                       dir_ + "/munge/munge.sock --pid-file=" + dir_ + "/munge/munged.pid --seed-file=" + dir_ +
                       "/munge/seed --log-file=" + dir_ + "/log/munged.log; slurmctld -f " + dir_ + "/slurm.conf; slurmd -f " +
                       dir_ + "/slurm.conf");
    if (r.code != 0) {
      why = "the Slurm daemons did not start: " + r.output;
      return false;
    }
    for (int i = 0; i < 60; ++i) {
      if (test::run(env() + "sinfo -h -o %t").output.find("idle") != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    why = "the node never became idle: " + test::read_text(dir_ + "/log/slurmctld.log");
    return false;
  }

 private:
  std::string dir_;
};

TEST(Slurm, PpoScriptRunsOnASingleNodeCluster) {
  const std::string dir = test::temp_dir("slurm");
  SlurmCluster cluster(dir + "/cluster");
  std::string why;
  if (!cluster.start(why)) GTEST_SKIP() << "Slurm cannot run here: " << why;
  auto r =
      test::keel("tokenizer train --input /usr/share/games/fortunes --doc-separator % --vocab-size 512 --out " + dir + "/tok");
  ASSERT_EQ(r.code, 0) << r.output;
  r = test::keel("model init --tokenizer " + dir + "/tok.model --d-model 64 --n-layer 2 --n-head 2 --out " + dir + "/init");
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string run = dir + "/run";
  const int base_port = test::free_port_block(6), master_port = test::free_port_block(1);
  const std::string rollouts = "tcp://127.0.0.1:" + std::to_string(base_port);
  // Mid-run, learner rank 1 is killed: the group fails (rank 0 within its collective timeout) and
  // the script starts it again, resuming from the last checkpoint.
  std::atomic<bool> done{false}, killed{false};
  std::thread killer([&] {
    while (!done.load() && !killed.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      if (test::read_ppo_run(run + "/learner/metrics.jsonl").version.size() < 2) continue;
      for (const auto& pid : split_lines(test::run("pgrep -f -- '[-]-rollouts-endpoint " + rollouts + "'").output))
        if (test::read_text("/proc/" + pid + "/environ").find(std::string("SLURM_PROCID=1") + '\0') != std::string::npos)
          killed = test::run("kill -9 " + pid).code == 0;
    }
  });
  r = test::run(
      cluster.env() + "KEEL_INIT=" + dir + "/init KEEL_BIN=" + test::keel_bin() + " KEEL_OUT=" + run +
      " KEEL_LEARNER_RANKS=2 KEEL_BASE_PORT=" + std::to_string(base_port) + " KEEL_MASTER_PORT=" + std::to_string(master_port) +
      " KEEL_PPO_ARGS='--updates 8 --rollouts-per-update 16 --eval-per-family 2 --eval-samples 1 --collective-timeout 20'"
      " KEEL_ACTOR_ARGS='--batch-prompts 8 --families sort' timeout 600 sbatch --wait --export=ALL --nodes=1"
      " --ntasks-per-node=2 --output=" +
      dir + "/job.out " + test::source_dir() + "/launch/slurm/keel_ppo.sbatch");
  done = true;
  killer.join();
  const std::string job = test::read_text(dir + "/job.out");
  ASSERT_EQ(r.code, 0) << r.output << job;
  EXPECT_NE(job.find("learner exited with 0"), std::string::npos) << job;
  ASSERT_TRUE(killed.load()) << "learner rank 1 was never found to kill";
  EXPECT_NE(job.find("restart 1 from its last checkpoint"), std::string::npos) << job;
  EXPECT_NE(test::read_text(run + "/logs/learner-0.log").find("resumed from"), std::string::npos);
  EXPECT_NE(test::read_text(run + "/logs/learner-0.log").find("data parallel: rank 0 of 2"), std::string::npos);
  EXPECT_NE(test::read_text(run + "/logs/learner-1.log").find("data parallel: rank 1 of 2"), std::string::npos);
  const auto ppo = test::read_ppo_run(run + "/learner/metrics.jsonl");
  ASSERT_EQ(ppo.version.size(), 8u) << job;
  for (size_t i = 0; i < ppo.version.size(); ++i) EXPECT_EQ(ppo.version[i], static_cast<double>(i + 1));
  EXPECT_TRUE(std::filesystem::exists(run + "/learner/model/model.safetensors"));
}

}  // namespace
}  // namespace keel
