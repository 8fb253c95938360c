// One actor-learner job on this machine, as `keel launch` runs it: the reward service, the learner
// (`keel ppo` or `keel dpo online`) and N actors, each a process of this binary with its log in
// <out>/logs/, supervised by core/process_supervisor.h (restarts with backoff; the learner resumes
// from its last checkpoint, a bounded number of times; a restarted actor gets a new incarnation).
// Endpoints come from one base port: rollouts +0, weights +1, chunks and credits +2, reward +5.
// While it runs, a status line from the learner's status.json (learner/run_status.h).
// Each role's options come from its config file section ([reward], [learner], [actor]) and its
// pass-through args; every process's command line is checked before the start, then printed
// (shell-quoted) and written to <out>/launch.ini.
// Roles split the job over machines (launch/slurm/keel_ppo.sbatch): "actors" runs only this
// node's actors, ranks actor_rank_base.. of actor_world, against the head's endpoints, until
// stopped or done_file appears; "head" runs the reward service and the learner.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "core/process_supervisor.h"
#include "learner/actor_devices.h"

namespace keel {

struct ActorLearnerJobOptions {
  std::string out = "runs/launch";  // run directory: learner/, logs/, launch.ini
  std::string init;                 // SFT model: the policy, the reference and the actors' start
  std::string learner = "ppo";      // ppo | dpo-online
  std::string reward_kind = "task";
  std::string host = "127.0.0.1";  // address the learner and reward service bind to
  int actors = 2;                  // on this machine (0: actors run elsewhere)
  int base_port = 5555;
  int threads_per_process = 1;
  int learner_restarts = 3;
  std::vector<std::string> learner_args, actor_args, reward_args;  // extra options of each role (win over the sections')
  std::map<std::string, std::vector<std::string>> sections;        // "learner", "actor", "reward": options from a config file
  std::vector<std::string> transport_args;                         // CURVE options every process gets
  std::string resolved_config;                                     // written to launch.ini with each process's command line
  std::string role = "all";                                        // all | head (reward + learner) | actors (this node's actors)
  int actor_rank_base = 0;                                         // rank of this node's first actor
  int actor_world = 0;                                             // actors over all nodes (0: actors)
  std::string done_file;                                           // role actors: stop when this file exists
  std::string actor_devices = "auto";                              // auto | a list: learner/actor_devices.h
  int head_gpus = 0;                                               // this node's first GPUs held by the head's processes
  void validate() const;
};

// The sections a config file may have, one per role.
inline const std::vector<std::string>& job_config_sections() {
  static const std::vector<std::string> names = {"reward", "learner", "actor"};
  return names;
}

// A role's extra options: its config section's, then its pass-through args, which win (a section's
// option that the pass-through also gives is dropped). An option keel launch sets itself (endpoints,
// --init, --out, ...) is an error naming the launch option to use instead.
std::vector<std::string> role_args(const ActorLearnerJobOptions& o, const std::string& role);

// The actors' options with the sampling settings the learner checks rollouts against: the
// learner's --temperature and --group-size are passed on to actors that do not set them; an
// actor setting that differs from the learner's is an error naming both (the learner would refuse
// every batch, learner/sampling_contract.h).
std::vector<std::string> actor_args_with_learner_sampling(const ActorLearnerJobOptions& o);

// The processes of the job, in start order (reward, learner, actors); each actor's device as
// learner/actor_devices.h assigns it, `gpus` counting the GPUs when that needs them.
std::vector<ChildSpec> actor_learner_processes(const ActorLearnerJobOptions& o, const std::function<int()>& gpus = visible_gpus);

// Checks every role's full command line (`keel <role> ... --check-config` in a child process),
// before anything starts: an unknown option, a bad value or a missing file is an error naming the
// role and the child's own message.
void check_job_options(const ActorLearnerJobOptions& o);

// check_job_options, then every process's command line, shell-quoted, one per line; returns 0.
int print_job_commands(const ActorLearnerJobOptions& o, std::ostream& out);

// Runs the job until the learner finishes (its exit code) or `stop` is set; then ends every process.
int run_actor_learner_job(const ActorLearnerJobOptions& o, const std::atomic<bool>& stop);

}  // namespace keel
