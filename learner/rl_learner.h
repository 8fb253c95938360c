// The composition roots of the actor-learner learners (`keel ppo`, `keel dpo online`): each loads
// its models, assembles the rollout side (the rollout service with its sockets on rank 0; the
// broadcast to the other data-parallel ranks; or a rollout log replayed), the held-out
// evaluation and the update builder, and runs them in the one actor-learner runtime
// (learner/actor_learner.h). Commands bind flags to these structs and call one function.
#pragma once

#include <cstdint>
#include <string>

#include "actors/heldout_eval.h"
#include "actors/prompt_eval.h"
#include "learner/dpo.h"
#include "learner/online_dpo.h"
#include "learner/ppo.h"
#include "learner/rollout_service.h"
#include "learner/train_loop.h"
#include "replay/rollout_queue.h"

namespace keel {

// What every actor-learner learner shares: its sockets, replay bounds, flow control, evaluation.
struct RolloutSideOptions {
  RolloutServiceOptions net;
  ReplayOptions replay;
  bool keep_stale = false;           // keep (and count) rollouts beyond max_staleness
  HeldOutEvalOptions eval;           // the built-in task families
  bool task_eval = true;             // evaluate on them (off with eval prompts, unless families are named)
  PromptEvalOptions prompt_eval;     // prompts_file set: the user's held-out prompts (eval/reward)
  std::string eval_reward_endpoint;  // the reward service that scores the prompt evaluation
  int eval_reward_timeout_ms = 60000;
};

// The learner's held-out evaluation: the task families and/or the user's prompts, as configured;
// an "auto" chat format is the one of `model_dir` (the policy's start).
std::function<Scalars(Transformer&)> make_learner_evaluation(RolloutSideOptions o, const Tokenizer& tok, double temperature,
                                                             const std::string& model_dir);

// The defaults of an actor-learner learner's TrainOptions (no warmup or decay, log every update).
TrainOptions actor_learner_train_defaults(const std::string& out_dir);

struct PpoLearnerOptions {
  std::string init;       // SFT model directory: the policy's start
  std::string reference;  // frozen reference ("" = init)
  std::string device = "cpu";
  int64_t updates = 20;
  TrainOptions train = actor_learner_train_defaults("runs/ppo");  // steps = updates * steps per update
  PpoOptions ppo;
  std::string critic = "head";  // head | separate
  std::string critic_init;      // the separate critic's start ("" = init)
  double critic_lr = 0;         // 0 = train.lr
  std::string rollouts_from;    // a rollout log to retrain from instead of live actors
  RolloutSideOptions side;
  std::string run_config;  // the resolved configuration, stored with every checkpoint
};

// Runs the PPO (GAE / GRPO / RLOO) learner; returns the process exit code (3: stopped by a signal).
int run_ppo_learner(PpoLearnerOptions o);

struct OnlineDpoLearnerOptions {
  std::string init, reference, device = "cpu";
  int64_t updates = 40;
  TrainOptions train = actor_learner_train_defaults("runs/dpo-online");
  DpoOptions dpo;
  OnlineDpoOptions online;
  double temperature = 1.0;  // the actors' sampling temperature (for the evaluation)
  RolloutSideOptions side;
  std::string run_config;
};

int run_online_dpo_learner(OnlineDpoLearnerOptions o);

}  // namespace keel
