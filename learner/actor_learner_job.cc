#include "learner/actor_learner_job.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "core/error.h"
#include "core/shell_words.h"
#include "learner/actor_devices.h"
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
  KEEL_CHECK(head_gpus >= 0, "--head-gpus must be at least 0");
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
  for (const auto& c : children) f << "# " << c.name << ": keel " << shell_join(c.args) << "\n";
}

bool same_setting(const std::string& a, const std::string& b) {
  try {
    return std::stod(a) == std::stod(b);
  } catch (const std::exception&) {
    return a == b;
  }
}

}  // namespace

namespace {

// The option names in a list of words ("--key value", "--key=value").
std::vector<std::string> option_names(const std::vector<std::string>& words) {
  std::vector<std::string> names;
  for (const auto& w : words)
    if (w.rfind("--", 0) == 0)
      names.push_back(w.substr(2, w.find('=') == std::string::npos ? std::string::npos : w.find('=') - 2));
  return names;
}

// Options keel launch gives each role itself, and the launch option that sets them.
const std::map<std::string, std::map<std::string, std::string>>& launcher_set_options() {
  static const std::map<std::string, std::map<std::string, std::string>> m = {
      {"reward", {{"kind", "--reward-kind"}, {"endpoint", "--base-port"}, {"threads", "--threads-per-process"}}},
      {"learner",
       {{"init", "--init"},
        {"out", "--out"},
        {"rollouts-endpoint", "--base-port"},
        {"weights-endpoint", "--base-port"},
        {"chunks-endpoint", "--base-port"},
        {"eval-reward", "--base-port"},
        {"threads", "--threads-per-process"}}},
      {"actor",
       {{"model", "--init"},
        {"rank", "--actor-rank-base"},
        {"world", "--actor-world"},
        {"rollouts", "--base-port"},
        {"weights", "--base-port"},
        {"chunks", "--base-port"},
        {"reward", "--base-port"},
        {"threads", "--threads-per-process"},
        {"incarnation", "(set on each restart)"}}},
  };
  return m;
}

const std::vector<std::string>& pass_through_of(const ActorLearnerJobOptions& o, const std::string& role) {
  KEEL_CHECK_KIND(ErrorKind::kInternal, role == "learner" || role == "actor" || role == "reward", "no role '" << role << "'");
  return role == "learner" ? o.learner_args : role == "actor" ? o.actor_args : o.reward_args;
}

}  // namespace

std::vector<std::string> role_args(const ActorLearnerJobOptions& o, const std::string& role) {
  const auto& pass = pass_through_of(o, role);
  const auto given = option_names(pass);
  std::vector<std::string> out;
  if (auto it = o.sections.find(role); it != o.sections.end())
    for (size_t i = 0; i + 1 < it->second.size(); i += 2) {  // ("--key", "value") pairs
      const auto& key = it->second[i];
      if (std::find(given.begin(), given.end(), key.substr(2)) != given.end()) continue;
      out.insert(out.end(), {key, it->second[i + 1]});
    }
  out.insert(out.end(), pass.begin(), pass.end());
  const auto& fixed = launcher_set_options().at(role);
  for (const auto& name : option_names(out))
    if (auto f = fixed.find(name); f != fixed.end())
      KEEL_FAIL("the " << role << "'s --" << name << " is set by keel launch itself (" << f->second << "); remove it from the ["
                       << role << "] section or the pass-through options");
  return out;
}

std::vector<std::string> actor_args_with_learner_sampling(const ActorLearnerJobOptions& o) {
  std::vector<std::string> args = role_args(o, "actor");
  const auto learner_args = role_args(o, "learner");
  for (const std::string name : {"--temperature", "--group-size"}) {
    const std::string learner = arg_value(learner_args, name), actor = arg_value(args, name);
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

std::vector<ChildSpec> actor_learner_processes(const ActorLearnerJobOptions& o, const std::function<int()>& gpus) {
  o.validate();
  const auto e = endpoints_of(o);
  const std::string th = std::to_string(o.threads_per_process);
  std::vector<ChildSpec> out;
  if (o.role != "actors") {
    out.push_back(child("reward", {"reward", "serve", "--kind", o.reward_kind, "--endpoint", e.reward, "--threads", th},
                        role_args(o, "reward"), o));
    std::vector<std::string> learner =
        o.learner == "ppo" ? std::vector<std::string>{"ppo"} : std::vector<std::string>{"dpo", "online"};
    learner.insert(learner.end(),
                   {"--init", o.init, "--out", o.out + "/learner", "--rollouts-endpoint", e.rollouts, "--weights-endpoint",
                    e.weights, "--chunks-endpoint", e.chunks, "--eval-reward", e.reward, "--threads", th});
    out.push_back(child("learner", learner, role_args(o, "learner"), o));
    out.back().max_restarts = o.learner_restarts;
    out.back().lead = true;
  }
  if (o.role == "head") return out;
  const int world = o.actor_world > 0 ? o.actor_world : o.actors;
  const auto actor_args = actor_args_with_learner_sampling(o);
  const auto devices = actor_devices(o, gpus);
  for (int i = 0; i < o.actors; ++i) {
    const int rank = o.actor_rank_base + i;
    out.push_back(
        child("actor-" + std::to_string(rank),
              {"actor", "--model", o.init, "--rank", std::to_string(rank), "--world", std::to_string(world), "--rollouts",
               e.rollouts, "--weights", e.weights, "--chunks", e.chunks, "--reward", e.reward, "--threads", th},
              devices[i].empty() ? actor_args : with_option(actor_args, "--device", devices[i]), o));
    out.back().args.insert(out.back().args.end(), {"--incarnation", "0"});
    out.back().incarnation_arg = static_cast<int>(out.back().args.size()) - 1;
  }
  return out;
}

void check_job_options(const ActorLearnerJobOptions& o) {
  const std::string exe = self_executable();
  bool actor_checked = false;
  for (const auto& c : actor_learner_processes(o)) {
    const bool actor = c.name.rfind("actor-", 0) == 0;
    if (actor && actor_checked) continue;  // actors differ only in rank and device (checked by actor_devices)
    actor_checked |= actor;
    auto args = c.args;
    args.push_back("--check-config");
    const auto r = run_captured(exe, args);
    std::string why = r.output;
    if (const auto at = why.find("error: "); at != std::string::npos) why = why.substr(at + 7);
    while (!why.empty() && why.back() == '\n') why.pop_back();
    KEEL_CHECK(r.code == 0, "the " << (actor ? "actors'" : c.name + "'s") << " options are not valid: " << why
                                   << "\n  (the command: keel " << shell_join(c.args) << ")");
  }
}

int print_job_commands(const ActorLearnerJobOptions& o, std::ostream& out) {
  check_job_options(o);
  for (const auto& c : actor_learner_processes(o)) out << c.name << ": keel " << shell_join(c.args) << "\n";
  return 0;
}

int run_actor_learner_job(const ActorLearnerJobOptions& o, const std::atomic<bool>& stop) {
  const auto e = endpoints_of(o);
  KEEL_CHECK(wire::is_local_endpoint(e.rollouts) || wire::transport_security().curve(),
             "--host " << o.host
                       << " is beyond loopback: give CURVE keys (keel keys generate; --curve-key, "
                          "--curve-server-key, --curve-allow) so that no traffic leaves this machine in clear");
  std::filesystem::create_directories(o.out + "/logs");
  check_job_options(o);
  const auto children = actor_learner_processes(o);
  write_launch_ini(o, children);
  for (const auto& c : children) std::cerr << "launch: " << c.name << ": keel " << shell_join(c.args) << "\n";
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
