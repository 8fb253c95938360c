// keel launch: learner, reward service and N actors on this machine from one command, each a
// process of this same binary with its own log, a live status line, every process restarted with
// backoff when it dies (the learner resumes from its last checkpoint, a bounded number of times;
// a restarted actor gets a new --incarnation so that its rollouts are new), and a clean shutdown
// of all on Ctrl-C or when the learner finishes.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "learner/run_status.h"
#include "wire/curve.h"

namespace keel {

namespace {

std::atomic<bool> g_interrupted{false};
void on_signal(int) { g_interrupted.store(true); }

std::vector<std::string> split_args(const std::string& s) {
  std::istringstream is(s);
  std::vector<std::string> out;
  std::string w;
  while (is >> w) out.push_back(w);
  return out;
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  KEEL_CHECK(n > 0, "cannot find the keel executable");
  return std::string(buf, static_cast<size_t>(n));
}

struct Child {
  std::string name;
  std::vector<std::string> args;
  pid_t pid = -1;
  int restarts = 0;
  std::chrono::steady_clock::time_point restart_at;
  int max_restarts = -1;        // -1: no bound
  int incarnation_arg = -1;     // index of the value of --incarnation in args, for actors
};

pid_t spawn(const std::string& exe, const std::vector<std::string>& args, const std::string& log) {
  const pid_t pid = ::fork();
  KEEL_CHECK(pid >= 0, "fork failed");
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(exe.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

std::string status_line(const std::string& learner_dir) {
  const auto st = read_run_status(learner_dir);
  return st ? format_run_status(*st) : "waiting for the first update";
}

}  // namespace

int cmd_launch(const Args& args) {
  std::string out = "runs/launch", init, ppo_args, actor_args, reward_args, reward_kind = "task", learner = "ppo";
  std::string host_addr = "127.0.0.1";
  int actors = 2, base_port = 5555, threads_per_process = 1, learner_restarts = 3;
  TransportOptions transport;
  po::options_description d("keel launch");
  add_transport_options(d, transport);
  d.add_options()("out", po::value(&out)->default_value(out), "run directory: learner/, logs/")(
      "init", po::value(&init)->required(), "SFT model directory: the policy, the reference and the actors' start")(
      "actors", po::value(&actors)->default_value(actors), "actor processes on this machine (0: actors run elsewhere)")(
      "host", po::value(&host_addr)->default_value(host_addr),
      "address the learner and reward service bind to (and local actors connect to); beyond loopback it needs --curve-key")(
      "base-port", po::value(&base_port)->default_value(base_port), "ports base..base+5")(
      "threads-per-process", po::value(&threads_per_process)->default_value(threads_per_process), "LibTorch threads of each process")(
      "reward-kind", po::value(&reward_kind)->default_value(reward_kind), "task | program | model (see keel reward serve)")(
      "learner", po::value(&learner)->default_value(learner), "ppo | dpo-online (keel dpo online; actors need --group-size 2)")(
      "learner-restarts", po::value(&learner_restarts)->default_value(learner_restarts),
      "times a learner that dies (killed, crashed) is started again; it resumes from its last checkpoint")(
      "ppo-args", po::value(&ppo_args)->default_value(ppo_args), "extra options for the learner (keel ppo or keel dpo online)")(
      "actor-args", po::value(&actor_args)->default_value(actor_args), "extra options for every keel actor")(
      "reward-args", po::value(&reward_args)->default_value(reward_args), "extra options for keel reward serve");
  const auto parsed = parse_options(args, "launch", "Starts learner, reward service and actors as processes on this machine.", d);
  if (parsed.help) return 0;
  KEEL_CHECK(actors >= 0, "--actors must be at least 0");
  apply_transport(transport);  // validates the key files before any child starts
  std::filesystem::create_directories(out + "/logs");
  const std::string exe = self_exe(), host = "tcp://" + host_addr + ":";
  const std::string rollouts = host + std::to_string(base_port), weights = host + std::to_string(base_port + 1),
                    chunks = host + std::to_string(base_port + 2), reward = host + std::to_string(base_port + 5);
  const std::string th = std::to_string(threads_per_process);
  KEEL_CHECK(wire::is_local_endpoint(rollouts) || wire::transport_security().curve(),
             "--host " << host_addr << " is beyond loopback: give CURVE keys (keel keys generate; --curve-key, "
                       "--curve-server-key, --curve-allow) so that no traffic leaves this machine in clear");

  std::vector<Child> children;
  auto add = [&](std::string name, std::vector<std::string> a, const std::string& extra) {
    for (auto& x : split_args(extra)) a.push_back(x);
    for (auto& x : transport.as_args()) a.push_back(x);
    children.push_back({std::move(name), std::move(a)});
  };
  add("reward", {"reward", "serve", "--kind", reward_kind, "--endpoint", reward, "--threads", th}, reward_args);
  KEEL_CHECK(learner == "ppo" || learner == "dpo-online", "--learner must be ppo or dpo-online");
  std::vector<std::string> learner_cmd = learner == "ppo" ? std::vector<std::string>{"ppo"} : std::vector<std::string>{"dpo", "online"};
  learner_cmd.insert(learner_cmd.end(), {"--init", init, "--out", out + "/learner", "--rollouts-endpoint", rollouts, "--weights-endpoint", weights,
                  "--chunks-endpoint", chunks, "--threads", th});
  add("learner", learner_cmd, ppo_args);
  children.back().max_restarts = learner_restarts;
  for (int i = 0; i < actors; ++i) {
    add("actor-" + std::to_string(i), {"actor", "--model", init, "--rank", std::to_string(i), "--world", std::to_string(actors),
                                       "--rollouts", rollouts, "--weights", weights, "--chunks", chunks, "--reward", reward,
                                       "--threads", th},
        actor_args);
    children.back().args.insert(children.back().args.end(), {"--incarnation", "0"});
    children.back().incarnation_arg = static_cast<int>(children.back().args.size()) - 1;
  }
  {
    std::ofstream f(out + "/launch.ini");
    f << parsed.resolved;
    for (const auto& c : children) {
      f << "# " << c.name << ": keel";
      for (const auto& a : c.args) f << " " << a;
      f << "\n";
    }
  }

  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  for (auto& c : children) c.pid = spawn(exe, c.args, out + "/logs/" + c.name + ".log");
  std::cerr << "launch: " << actors << " local actors, learner on " << rollouts << ", logs in " << out << "/logs\n";
  const bool tty = ::isatty(2);
  auto last_status = std::chrono::steady_clock::now();
  int learner_code = -1;
  while (learner_code < 0 && !g_interrupted.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const auto now = std::chrono::steady_clock::now();
    for (auto& c : children) {
      if (c.pid > 0) {
        int status = 0;
        if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
          const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
          c.pid = -1;
          const bool is_learner = c.name == "learner";
          if (is_learner && (code == 0 || c.restarts >= c.max_restarts)) {
            learner_code = code;  // finished, or out of restarts
            break;
          }
          const int backoff = std::min(30, 1 << std::min(c.restarts, 5));
          std::cerr << (tty ? "\n" : "") << "launch: " << c.name << " exited (" << code << "); restart in " << backoff << " s\n";
          c.restart_at = now + std::chrono::seconds(backoff);
          ++c.restarts;
        }
      } else if (now >= c.restart_at) {
        if (c.incarnation_arg >= 0) c.args[static_cast<size_t>(c.incarnation_arg)] = std::to_string(c.restarts);
        c.pid = spawn(exe, c.args, out + "/logs/" + c.name + ".log");
      }
    }
    if (now - last_status > std::chrono::seconds(tty ? 1 : 10)) {
      const auto s = status_line(out + "/learner");
      if (tty) std::fprintf(stderr, "\r%s\033[K", s.c_str());
      else std::fprintf(stderr, "%s\n", s.c_str());
      last_status = now;
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  // Shutdown: the learner first (it checkpoints on SIGTERM), then everyone else.
  for (auto& c : children)
    if (c.pid > 0) ::kill(c.pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (auto& c : children) {
    while (c.pid > 0) {
      int status = 0;
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        if (c.name == "learner" && learner_code < 0) learner_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        c.pid = -1;
      } else if (std::chrono::steady_clock::now() > deadline) {
        ::kill(c.pid, SIGKILL);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
  }
  std::cerr << "launch: " << status_line(out + "/learner") << "\n";
  std::cerr << "launch: learner exited with " << learner_code << (g_interrupted.load() ? " (interrupted)" : "") << "\n";
  return learner_code == 0 ? 0 : (learner_code < 0 ? 1 : learner_code);
}

}  // namespace keel
