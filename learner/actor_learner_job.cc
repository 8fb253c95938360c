#include "learner/actor_learner_job.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "core/error.h"
#include "learner/run_status.h"
#include "wire/curve.h"

namespace keel {

void ActorLearnerJobOptions::validate() const {
  KEEL_CHECK(!init.empty(), "the job needs --init (an SFT model directory)");
  KEEL_CHECK(actors >= 0, "--actors must be at least 0");
  KEEL_CHECK(learner == "ppo" || learner == "dpo-online", "--learner must be ppo or dpo-online, not '" << learner << "'");
  KEEL_CHECK(base_port > 0 && base_port + 5 < 65536, "--base-port " << base_port << " leaves no room for ports base..base+5");
  KEEL_CHECK(role == "all" || role == "head" || role == "actors", "--role must be all, head or actors, not '" << role << "'");
  KEEL_CHECK(
      actor_rank_base >= 0 && (actor_world == 0 || actor_rank_base + actors <= actor_world),
      "actor ranks " << actor_rank_base << ".." << actor_rank_base + actors - 1 << " do not fit --actor-world " << actor_world);
}

namespace {

struct Endpoints {
  std::string rollouts, weights, chunks, reward;
};

Endpoints endpoints_of(const ActorLearnerJobOptions& o) {
  const std::string host = "tcp://" + o.host + ":";
  return {host + std::to_string(o.base_port), host + std::to_string(o.base_port + 1), host + std::to_string(o.base_port + 2),
          host + std::to_string(o.base_port + 5)};
}

ChildSpec child(std::string name, std::vector<std::string> args, const std::vector<std::string>& extra,
                const ActorLearnerJobOptions& o) {
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), o.transport_args.begin(), o.transport_args.end());
  ChildSpec c;
  c.name = std::move(name);
  c.args = std::move(args);
  return c;
}

std::string status_line(const std::string& learner_dir) {
  const auto st = read_run_status(learner_dir);
  return st ? format_run_status(*st) : "waiting for the first update";
}

void write_launch_ini(const ActorLearnerJobOptions& o, const std::vector<ChildSpec>& children) {
  std::ofstream f(o.out + "/launch.ini");
  f << o.resolved_config;
  for (const auto& c : children) {
    f << "# " << c.name << ": keel";
    for (const auto& a : c.args) f << " " << a;
    f << "\n";
  }
}

// The value of `--name` in a command line (`--name v` or `--name=v`), the last one winning as in
// Boost.Program_options; empty when absent.
std::string arg_value(const std::vector<std::string>& args, const std::string& name) {
  std::string v;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == name && i + 1 < args.size()) v = args[i + 1];
    if (args[i].rfind(name + "=", 0) == 0) v = args[i].substr(name.size() + 1);
  }
  return v;
}

bool same_setting(const std::string& a, const std::string& b) {
  try {
    return std::stod(a) == std::stod(b);
  } catch (const std::exception&) {
    return a == b;
  }
}

}  // namespace

std::vector<std::string> actor_args_with_learner_sampling(const ActorLearnerJobOptions& o) {
  std::vector<std::string> args = o.actor_args;
  for (const std::string name : {"--temperature", "--group-size"}) {
    const std::string learner = arg_value(o.learner_args, name), actor = arg_value(o.actor_args, name);
    if (learner.empty()) continue;
    if (actor.empty()) {
      args.insert(args.end(), {name, learner});
      continue;
    }
    KEEL_CHECK(same_setting(learner, actor), "the learner's " << name << " is " << learner << " but the actors' is " << actor
                                                              << ": the learner would refuse every batch; give both the same "
                                                              << name << " (or give it to the learner only)");
  }
  return args;
}

std::vector<ChildSpec> actor_learner_processes(const ActorLearnerJobOptions& o) {
  o.validate();
  const auto e = endpoints_of(o);
  const std::string th = std::to_string(o.threads_per_process);
  std::vector<ChildSpec> out;
  if (o.role != "actors") {
    out.push_back(
        child("reward", {"reward", "serve", "--kind", o.reward_kind, "--endpoint", e.reward, "--threads", th}, o.reward_args, o));
    std::vector<std::string> learner =
        o.learner == "ppo" ? std::vector<std::string>{"ppo"} : std::vector<std::string>{"dpo", "online"};
    learner.insert(learner.end(), {"--init", o.init, "--out", o.out + "/learner", "--rollouts-endpoint", e.rollouts,
                                   "--weights-endpoint", e.weights, "--chunks-endpoint", e.chunks, "--threads", th});
    out.push_back(child("learner", learner, o.learner_args, o));
    out.back().max_restarts = o.learner_restarts;
    out.back().lead = true;
  }
  if (o.role == "head") return out;
  const int world = o.actor_world > 0 ? o.actor_world : o.actors;
  const auto actor_args = actor_args_with_learner_sampling(o);
  for (int i = 0; i < o.actors; ++i) {
    const int rank = o.actor_rank_base + i;
    out.push_back(
        child("actor-" + std::to_string(rank),
              {"actor", "--model", o.init, "--rank", std::to_string(rank), "--world", std::to_string(world), "--rollouts",
               e.rollouts, "--weights", e.weights, "--chunks", e.chunks, "--reward", e.reward, "--threads", th},
              actor_args, o));
    out.back().args.insert(out.back().args.end(), {"--incarnation", "0"});
    out.back().incarnation_arg = static_cast<int>(out.back().args.size()) - 1;
  }
  return out;
}

int run_actor_learner_job(const ActorLearnerJobOptions& o, const std::atomic<bool>& stop) {
  const auto e = endpoints_of(o);
  KEEL_CHECK(wire::is_local_endpoint(e.rollouts) || wire::transport_security().curve(),
             "--host " << o.host
                       << " is beyond loopback: give CURVE keys (keel keys generate; --curve-key, "
                          "--curve-server-key, --curve-allow) so that no traffic leaves this machine in clear");
  std::filesystem::create_directories(o.out + "/logs");
  const auto children = actor_learner_processes(o);
  write_launch_ini(o, children);
  ProcessSupervisor supervisor(self_executable(), o.out + "/logs");
  for (const auto& c : children) supervisor.add(c);
  std::cerr << "launch: " << o.actors << " local actors, learner on " << e.rollouts << ", logs in " << o.out << "/logs\n";
  const bool tty = ::isatty(2) && o.role != "actors";
  auto last_status = std::chrono::steady_clock::now();
  std::atomic<bool> ended{false};  // stop, or the done file of an actors-only role
  int code = supervisor.run(ended, [&] {
    if (stop.load() || (!o.done_file.empty() && std::filesystem::exists(o.done_file))) ended.store(true);
    if (o.role == "actors" || std::chrono::steady_clock::now() - last_status < std::chrono::seconds(tty ? 1 : 10)) return;
    const auto s = status_line(o.out + "/learner");
    if (tty)
      std::fprintf(stderr, "\r%s\033[K", s.c_str());
    else
      std::fprintf(stderr, "%s\n", s.c_str());
    last_status = std::chrono::steady_clock::now();
  });
  if (tty) std::fprintf(stderr, "\n");
  const int at_shutdown = supervisor.shutdown(std::chrono::seconds(60));  // the learner first: it checkpoints
  if (code < 0) code = at_shutdown;
  if (o.role == "actors") return 0;  // no learner here: stopped or done
  std::cerr << "launch: " << status_line(o.out + "/learner") << "\n";
  std::cerr << "launch: learner exited with " << code << (stop.load() ? " (interrupted)" : "") << "\n";
  return code == 0 ? 0 : (code < 0 ? 1 : code);
}

}  // namespace keel
