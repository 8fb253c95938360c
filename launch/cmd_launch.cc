// keel launch: flags bound to learner/actor_learner_job.h (the reward service, the learner and N
// actors as supervised processes of this binary on this machine).
#include <atomic>
#include <csignal>
#include <iostream>

#include "core/shell_words.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "learner/actor_learner_job.h"

namespace keel {

namespace {

std::atomic<bool> g_interrupted{false};
void on_signal(int) { g_interrupted.store(true); }

}  // namespace

int cmd_launch(const Args& args) {
  ActorLearnerJobOptions o;
  std::string ppo_args, actor_args, reward_args;
  TransportOptions transport;
  po::options_description d("keel launch");
  add_transport_options(d, transport);
  // clang-format off
  d.add_options()("out", po::value(&o.out)->default_value(o.out), "run directory: learner/, logs/")(
      "init", po::value(&o.init)->required(), "SFT model directory: the policy, the reference and the actors' start")(
      "actors", po::value(&o.actors)->default_value(o.actors), "actor processes on this machine (0: actors run elsewhere)")(
      "host", po::value(&o.host)->default_value(o.host),
      "address the learner and reward service bind to (and local actors connect to); beyond loopback it needs --curve-key")(
      "base-port", po::value(&o.base_port)->default_value(o.base_port), "ports base..base+5")(
      "threads-per-process", po::value(&o.threads_per_process)->default_value(o.threads_per_process), "LibTorch threads of each process")(
      "reward-kind", po::value(&o.reward_kind)->default_value(o.reward_kind), "task | program | model (see keel reward serve)")(
      "learner", po::value(&o.learner)->default_value(o.learner), "ppo | dpo-online (keel dpo online; actors need --group-size 2)")(
      "learner-restarts", po::value(&o.learner_restarts)->default_value(o.learner_restarts),
      "times a learner that dies (killed, crashed) is started again; it resumes from its last checkpoint")(
      "ppo-args", po::value(&ppo_args)->default_value(ppo_args),
      "extra options for the learner (keel ppo or keel dpo online), split with shell quoting; win over [learner]")(
      "actor-args", po::value(&actor_args)->default_value(actor_args),
      "extra options for every keel actor, split with shell quoting; win over [actor]")(
      "reward-args", po::value(&reward_args)->default_value(reward_args),
      "extra options for keel reward serve, split with shell quoting (--program 'python3 \"my dir/score.py\" --strict'); "
      "win over [reward]")(
      "role", po::value(&o.role)->default_value(o.role),
      "all | head (reward service and learner) | actors (only this node's actors, against --host's endpoints)")(
      "actor-rank-base", po::value(&o.actor_rank_base)->default_value(o.actor_rank_base), "rank of this node's first actor")(
      "actor-world", po::value(&o.actor_world)->default_value(o.actor_world), "actors over all nodes (0: --actors)")(
      "done-file", po::value(&o.done_file), "role actors: stop the actors when this file appears (the learner's end)")(
      "actor-devices", po::value(&o.actor_devices)->default_value(o.actor_devices),
      "auto: actors given --device cuda take this node's GPUs in turn, leaving out the learner's, the reward service's and "
      "--head-gpus while any is left; or a list the actors take in turn (cuda:1,cuda:2,cpu), replacing their --device")(
      "head-gpus", po::value(&o.head_gpus)->default_value(o.head_gpus),
      "this node's first N GPUs belong to processes started elsewhere (role actors on the head node: the learner ranks)");
  // clang-format on
  const auto parsed = parse_options(args, "launch",
                                    "Starts learner, reward service and actors as processes on this machine. A --config file "
                                    "may hold each role's options under [reward], [learner] and [actor] (any option of keel "
                                    "reward serve, keel ppo or keel dpo online, keel actor; values kept whole).",
                                    d, job_config_sections(), &o.sections);
  if (parsed.help && !parsed.check) return 0;
  apply_transport(transport);  // validates the key files before any child starts
  o.learner_args = shell_split(ppo_args);
  o.actor_args = shell_split(actor_args);
  o.reward_args = shell_split(reward_args);
  o.transport_args = transport.as_args();
  o.resolved_config = parsed.resolved;
  if (parsed.check) return print_job_commands(o, std::cout);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  return run_actor_learner_job(o, g_interrupted);
}

}  // namespace keel
