// Actor-learner roles: keel actor, keel reward serve, keel ppo, keel dpo online.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <iostream>

#include "actors/actor.h"
#include "core/error.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "learner/rl_learner.h"
#include "reward/scorer.h"
#include "reward/service.h"
#include "wire/channel.h"

namespace keel {

namespace {
std::atomic<bool> g_stop{false};
void on_stop(int) { g_stop.store(true); }
void install_stop_flag() {
  std::signal(SIGINT, on_stop);
  std::signal(SIGTERM, on_stop);
}
}  // namespace

int cmd_actor(const Args& args) {
  ActorOptions o;
  o.sampling.max_new_tokens = 24;
  int threads = 0;
  TransportOptions transport;
  po::options_description d("keel actor");
  add_runtime_options(d, threads, o.device);
  add_transport_options(d, transport);
  add_sampling_options(d, o.sampling);
  // clang-format off
  d.add_options()("model", po::value(&o.model_dir)->required(), "initial policy (version 0) with its tokenizer")(
      "rollouts", po::value(&o.rollouts_endpoint)->default_value(o.rollouts_endpoint), "learner rollout endpoint")(
      "weights", po::value(&o.weights_endpoint)->default_value(o.weights_endpoint), "learner weight announcements")(
      "chunks", po::value(&o.chunks_endpoint)->default_value(o.chunks_endpoint), "learner weight chunks")(
      "reward", po::value(&o.reward_endpoint)->default_value(o.reward_endpoint), "reward service endpoint")(
      "prompts", po::value(&o.prompts)->default_value(o.prompts), "JSONL of {prompt}, or 'tasks' (built-in train split)")(
      "families", po::value(&o.task_families)->multitoken(), "built-in task families to use (default all)")(
      "tasks-per-family", po::value(&o.tasks_per_family)->default_value(o.tasks_per_family), "built-in prompts per family")(
      "template", po::value(&o.prompt_template)->default_value(o.prompt_template), "chat format: auto (the model's tokenizer_config.json, else chat) | chat | chatml | llama2 | llama3 | zephyr | none")(
      "rank", po::value(&o.rank)->default_value(o.rank), "this actor's rank (its prompt shard)")(
      "world", po::value(&o.world)->default_value(o.world), "number of actors")(
      "incarnation", po::value(&o.incarnation)->default_value(o.incarnation),
      "starts of this rank before this one (keel launch counts restarts): keeps a restarted actor's rollouts new")(
      "batch-prompts", po::value(&o.batch_prompts)->default_value(o.batch_prompts), "prompts per batch")(
      "group-size", po::value(&o.group_size)->default_value(o.group_size), "responses per prompt")(
      "sync", po::value(&o.sync)->default_value(o.sync), "wait for a new policy version after each batch")(
      "credits", po::value(&o.credits)->default_value(o.credits),
      "ask the learner before each batch and generate only when granted (false: generate freely)")(
      "reward-timeout-ms", po::value(&o.reward_timeout_ms)->default_value(o.reward_timeout_ms), "wait for a score")(
      "reward-retries", po::value(&o.reward_retries)->default_value(o.reward_retries), "score retries before giving up")(
      "max-batches", po::value(&o.max_batches)->default_value(o.max_batches), "stop after this many batches (0 = never)")(
      "decode-dtype", po::value(&o.decode_dtype)->default_value(o.decode_dtype),
      "float32 | bfloat16: weights decoding steps read (bfloat16 halves the bytes; products still sum in float32; "
      "on CUDA, the device's bfloat16 products)");
  // clang-format on
  const auto parsed = parse_options(args, "actor", "Generates, scores and pushes rollouts with the newest policy.", d);
  if (parsed.help && !parsed.check) return 0;
  o.validate();
  if (parsed.check) return 0;
  o.device = apply_runtime(threads, o.device).str();
  apply_transport(transport);
  install_stop_flag();
  const auto st = run_actor(o, g_stop);
  std::cerr << describe_actor_stats(st, o.rank) << "\n";
  return 0;
}

int cmd_reward_serve(const Args& args) {
  RewardServiceOptions o;
  ScorerOptions scorer;
  int threads = 0;
  TransportOptions transport;
  po::options_description d("keel reward serve");
  add_runtime_options(d, threads, scorer.device);
  add_transport_options(d, transport);
  // clang-format off
  d.add_options()("kind", po::value(&scorer.kind)->default_value(scorer.kind), "task | program | model")(
      "program", po::value(&scorer.program), "command of a reward program (kind program; docs/reward_protocol.md)")(
      "program-timeout-ms", po::value(&scorer.program_timeout_ms)->default_value(scorer.program_timeout_ms),
      "kind program: deadline of one batch (keep it below the actors' --reward-timeout-ms)")(
      "model", po::value(&scorer.model), "reward-model directory (kind model)")(
      "endpoint", po::value(&o.endpoint)->default_value(o.endpoint), "bind address")(
      "max-batch", po::value(&o.max_batch)->default_value(o.max_batch), "items scored together")(
      "max-wait-ms", po::value(&o.max_wait_ms)->default_value(o.max_wait_ms), "longest wait to fill a batch")(
      "missing-eos-penalty", po::value(&o.missing_eos_penalty)->default_value(o.missing_eos_penalty),
      "subtracted from responses that do not end in EOS");
  // clang-format on
  const auto parsed = parse_options(args, "reward serve", "Scores rollouts for actors, batching requests.", d);
  if (parsed.help && !parsed.check) return 0;
  scorer.validate();
  if (parsed.check) return 0;
  scorer.device = apply_runtime(threads, scorer.device).str();
  apply_transport(transport);
  install_stop_flag();
  run_reward_service(o, scorer, g_stop);
  return 0;
}

namespace {

void add_rollout_side_options(po::options_description& d, RolloutSideOptions& o) {
  auto& c = o.net.credits;
  // clang-format off
  d.add_options()("max-staleness", po::value(&o.replay.max_staleness)->default_value(o.replay.max_staleness),
                  "versions a rollout may lag")(
      "keep-stale", po::value(&o.keep_stale)->default_value(o.keep_stale), "keep (and count) rollouts beyond max-staleness")(
      "queue-capacity", po::value(&o.replay.capacity)->default_value(o.replay.capacity), "rollouts the learner's queue holds")(
      "credit-ahead", po::value(&c.ahead_updates)->default_value(c.ahead_updates),
      "updates' worth of rollouts actors may generate ahead of the update being collected (at most max-staleness)")(
      "credit-ttl", po::value(&c.ttl_s)->default_value(c.ttl_s), "seconds a granted batch may take before its credit lapses")(
      "rollouts-endpoint", po::value(&o.net.rollouts_endpoint)->default_value(o.net.rollouts_endpoint), "bind: rollouts")(
      "weights-endpoint", po::value(&o.net.weights_endpoint)->default_value(o.net.weights_endpoint), "bind: announcements")(
      "chunks-endpoint", po::value(&o.net.chunks_endpoint)->default_value(o.net.chunks_endpoint),
      "bind: weight chunks and credit requests")(
      "shared-dir", po::value(&o.net.shared_dir)->default_value(o.net.shared_dir), "shared-memory directory of the weights region same-host actors use ('none': every actor takes the chunks over the network)")(
      "rollout-log", po::value(&o.net.rollout_log), "HDF5 file logging every rollout")(
      "peer-timeout", po::value(&o.net.peer_timeout_s)->default_value(o.net.peer_timeout_s),
      "seconds without a message (rollouts or heartbeats) before an actor is reported silent and its credits lapse")(
      "eval-per-family", po::value(&o.eval.per_family)->default_value(o.eval.per_family), "held-out tasks per family at eval")(
      "eval-samples", po::value(&o.eval.samples)->default_value(o.eval.samples), "sampled responses per held-out task at eval")(
      "eval-families", po::value(&o.eval.families)->multitoken(), "task families evaluated (default all)")(
      "template", po::value(&o.eval.prompt_template)->default_value(o.eval.prompt_template), "chat format of the eval: auto | chat | chatml | llama2 | llama3 | zephyr | none")(
      "eval-prompts", po::value(&o.prompt_eval.prompts_file),
      "held-out prompts of your own task (JSONL {prompt} or {messages}, any other fields go to the reward): eval/reward, "
      "scored by the reward service; the built-in task families are then evaluated only when --eval-families names them")(
      "eval-reward", po::value(&o.eval_reward_endpoint), "the reward service that scores --eval-prompts (keel launch sets it)")(
      "eval-reward-timeout-ms", po::value(&o.eval_reward_timeout_ms)->default_value(o.eval_reward_timeout_ms),
      "a scoring request of the evaluation unanswered this long skips that evaluation")(
      "eval-max-new-tokens", po::value(&o.prompt_eval.max_new_tokens)->default_value(o.prompt_eval.max_new_tokens),
      "longest response to an eval prompt");
  // clang-format on
}

// The evaluation settings the options share (samples, template), and which evaluations run.
void resolve_rollout_side_options(RolloutSideOptions& o) {
  o.prompt_eval.samples = o.eval.samples;
  o.prompt_eval.prompt_template = o.eval.prompt_template;
  o.task_eval = o.prompt_eval.prompts_file.empty() || !o.eval.families.empty();
}

// The enumerated choices, as given on the command line.
struct PpoChoices {
  std::string estimator = "gae", kl_estimator = "auto", kl_in = "auto", off_policy = "none", is_level = "token";
};

void add_ppo_options(po::options_description& d, PpoLearnerOptions& o, PpoChoices& c) {
  auto& p = o.ppo;
  // clang-format off
  d.add_options()("init", po::value(&o.init)->required(), "policy to start from (an SFT model directory)")(
      "reference", po::value(&o.reference), "frozen reference model (default: --init)")(
      "updates", po::value(&o.updates)->default_value(o.updates), "PPO updates (steps = updates * epochs * minibatches)")(
      "rollouts-per-update", po::value(&p.rollouts_per_update)->default_value(p.rollouts_per_update), "rollouts per update")(
      "epochs", po::value(&p.epochs)->default_value(p.epochs), "passes over each update's rollouts")(
      "minibatches", po::value(&p.minibatches)->default_value(p.minibatches), "optimizer steps per epoch")(
      "clip", po::value(&p.clip)->default_value(p.clip), "policy ratio clip: the ratio stays in [1 - clip, 1 + clip-high]")(
      "clip-high", po::value(&p.clip_high)->default_value(p.clip_high), "upper ratio clip (0: --clip; above it: clip-higher)")(
      "dual-clip", po::value(&p.dual_clip)->default_value(p.dual_clip),
      "above 1: bound the loss of negative advantages by -A * dual-clip (0: off)")(
      "value-clip", po::value(&p.value_clip)->default_value(p.value_clip), "value clip")(
      "vf-coef", po::value(&p.vf_coef)->default_value(p.vf_coef), "value loss coefficient")(
      "gamma", po::value(&p.gamma)->default_value(p.gamma), "discount")(
      "lambda", po::value(&p.lambda)->default_value(p.lambda), "GAE lambda")(
      "temperature", po::value(&p.temperature)->default_value(p.temperature), "the actors' sampling temperature")(
      "kl-coef", po::value(&p.kl.init)->default_value(p.kl.init), "initial KL coefficient beta")(
      "kl-target", po::value(&p.kl.target)->default_value(p.kl.target), "adaptive KL target (0 = fixed beta)")(
      "kl-horizon", po::value(&p.kl.horizon)->default_value(p.kl.horizon), "adaptive KL horizon")(
      "kl-estimator", po::value(&c.kl_estimator)->default_value(c.kl_estimator),
      "k1 | k2 | k3 | abs | auto (k1 in the reward, k3 as a loss term)")(
      "kl-in", po::value(&c.kl_in)->default_value(c.kl_in),
      "where the KL acts: reward (per-token penalty) | loss (beta * KL term) | auto (loss for grpo/dr-grpo, else reward)")(
      "whiten-advantages", po::value(&p.whiten_advantages)->default_value(p.whiten_advantages), "whiten advantages")(
      "estimator", po::value(&c.estimator)->default_value(c.estimator),
      "gae | vtrace (V-trace targets for stale rollouts) | grpo | dr-grpo (no division by the group's std) | rloo")(
      "off-policy", po::value(&c.off_policy)->default_value(c.off_policy),
      "none: ratio against the actor's log-probs | decoupled: ratio against the learner's own log-probs at the "
      "start of the update, each token weighted by the truncated ratio learner / actor (TIS)")(
      "is-level", po::value(&c.is_level)->default_value(c.is_level), "decoupled: importance weights per token | sequence")(
      "is-cap", po::value(&p.is_cap)->default_value(p.is_cap), "decoupled: importance weights truncated at this")(
      "is-mask", po::value(&p.is_mask)->default_value(p.is_mask), "decoupled: weights outside [1/cap, cap] become 0 instead")(
      "critic", po::value(&o.critic)->default_value(o.critic),
      "GAE's value model: head (a value head on the policy) | separate (its own model, see --critic-init)")(
      "critic-init", po::value(&o.critic_init),
      "model directory the separate critic starts from (default: --init); a reward model's score head "
      "becomes the critic's initial value head")(
      "critic-lr", po::value(&o.critic_lr)->default_value(o.critic_lr), "the separate critic's peak learning rate (0 = --lr)")(
      "group-size", po::value(&p.group_size)->default_value(p.group_size), "responses per prompt (grpo/rloo)")(
      "rollouts-from", po::value(&o.rollouts_from),
      "train on the rollouts of this rollout log, in order, instead of live actors (no sockets, nothing published)");
  // clang-format on
}

}  // namespace

int cmd_ppo(const Args& args) {
  PpoLearnerOptions o;
  PpoChoices choices;
  int threads = 0;
  TransportOptions transport;
  po::options_description d("keel ppo");
  add_train_options(d, o.train);
  add_runtime_options(d, threads, o.device);
  add_ppo_options(d, o, choices);
  add_transport_options(d, transport);
  add_rollout_side_options(d, o.side);
  const auto parsed = parse_options(args, "ppo", "The PPO learner: trains on actors' rollouts, publishes weights.", d);
  if (parsed.help && !parsed.check) return 0;
  resolve_rollout_side_options(o.side);
  o.ppo.estimator = parse_advantage_estimator(choices.estimator);
  o.ppo.kl_placement = parse_kl_placement(choices.kl_in, o.ppo.estimator);
  o.ppo.off_policy = parse_off_policy_correction(choices.off_policy);
  o.ppo.is_level = parse_is_level(choices.is_level);
  const bool in_loss = o.ppo.kl_placement == KlPlacement::kLoss;
  o.ppo.kl_estimator = parse_kl_estimator(choices.kl_estimator == "auto" ? (in_loss ? "k3" : "k1") : choices.kl_estimator);
  o.ppo.validate();
  if (parsed.check) return 0;
  o.device = apply_runtime(threads, o.device).str();
  apply_transport(transport);
  install_stop_signal_handlers();
  o.run_config = parsed.resolved;
  return run_ppo_learner(std::move(o));
}

int cmd_dpo_online(const Args& args) {
  OnlineDpoLearnerOptions o;
  std::string loss_type = "sigmoid";
  int threads = 0;
  TransportOptions transport;
  po::options_description d("keel dpo online");
  add_train_options(d, o.train);
  add_runtime_options(d, threads, o.device);
  // clang-format off
  d.add_options()("init", po::value(&o.init)->required(), "policy to start from (an SFT model directory)")(
      "reference", po::value(&o.reference), "frozen reference model (default: --init)")(
      "updates", po::value(&o.updates)->default_value(o.updates), "optimizer steps; each publishes a new policy version")(
      "pairs-per-step", po::value(&o.online.pairs_per_step)->default_value(o.online.pairs_per_step), "fresh pairs per step")(
      "group-size", po::value(&o.online.group_size)->default_value(o.online.group_size),
      "responses per prompt the actors sample (their --group-size)")(
      "margin", po::value(&o.online.margin)->default_value(o.online.margin), "minimum score gap of a pair")(
      "pairs-out", po::value(&o.online.buffer), "append every mined pair to this preference buffer")(
      "loss", po::value(&loss_type)->default_value(loss_type), "sigmoid | cdpo | robust | hinge | ipo | simpo")(
      "beta", po::value(&o.dpo.loss.beta)->default_value(o.dpo.loss.beta), "DPO beta")(
      "label-smoothing", po::value(&o.dpo.loss.label_smoothing)->default_value(o.dpo.loss.label_smoothing), "cdpo / robust")(
      "sft-weight", po::value(&o.dpo.sft_weight)->default_value(o.dpo.sft_weight), "RPO: weight of the chosen response's NLL")(
      "max-len", po::value(&o.dpo.max_len)->default_value(o.dpo.max_len), "prompt + response tokens per row")(
      "temperature", po::value(&o.temperature)->default_value(o.temperature), "the actors' sampling temperature (for the eval)");
  // clang-format on
  add_transport_options(d, transport);
  add_rollout_side_options(d, o.side);
  const auto parsed =
      parse_options(args, "dpo online", "Online DPO: pairs mined from the actors' fresh rollouts, weights published back.", d);
  if (parsed.help && !parsed.check) return 0;
  resolve_rollout_side_options(o.side);
  o.dpo.loss.type = parse_dpo_loss_type(loss_type);
  if (parsed.check) return 0;
  o.device = apply_runtime(threads, o.device).str();
  apply_transport(transport);
  install_stop_signal_handlers();
  o.run_config = parsed.resolved;
  return run_online_dpo_learner(std::move(o));
}

}  // namespace keel
