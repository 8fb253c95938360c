// Actor-learner roles: keel actor, keel reward serve, keel ppo, keel dpo online.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <iostream>

#include "actors/actor.h"
#include "actors/task_eval.h"
#include "core/checkpoint.h"
#include "learner/critic.h"
#include "learner/data_parallel_rollouts.h"
#include "learner/log_rollout_source.h"
#include "core/error.h"
#include "core/tasks.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "learner/online_dpo.h"
#include "learner/ppo.h"
#include "learner/rollout_service.h"
#include "learner/train_loop.h"
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
  d.add_options()("model", po::value(&o.model_dir)->required(), "initial policy (version 0) with its tokenizer")(
      "rollouts", po::value(&o.rollouts_endpoint)->default_value(o.rollouts_endpoint), "learner rollout endpoint")(
      "weights", po::value(&o.weights_endpoint)->default_value(o.weights_endpoint), "learner weight announcements")(
      "chunks", po::value(&o.chunks_endpoint)->default_value(o.chunks_endpoint), "learner weight chunks")(
      "reward", po::value(&o.reward_endpoint)->default_value(o.reward_endpoint), "reward service endpoint")(
      "prompts", po::value(&o.prompts)->default_value(o.prompts), "JSONL of {prompt}, or 'tasks' (built-in train split)")(
      "families", po::value(&o.task_families)->multitoken(), "built-in task families to use (default all)")(
      "tasks-per-family", po::value(&o.tasks_per_family)->default_value(o.tasks_per_family), "built-in prompts per family")(
      "template", po::value(&o.prompt_template)->default_value(o.prompt_template), "prompt template: chat | none")(
      "rank", po::value(&o.rank)->default_value(o.rank), "this actor's rank (its prompt shard)")(
      "world", po::value(&o.world)->default_value(o.world), "number of actors")(
      "incarnation", po::value(&o.incarnation)->default_value(o.incarnation),
      "starts of this rank before this one (keel launch counts restarts): keeps a restarted actor's rollouts new")(
      "batch-prompts", po::value(&o.batch_prompts)->default_value(o.batch_prompts), "prompts per batch")(
      "group-size", po::value(&o.group_size)->default_value(o.group_size), "responses per prompt")(
      "sync", po::value(&o.sync)->default_value(o.sync), "wait for a new policy version after each batch")(
      "reward-timeout-ms", po::value(&o.reward_timeout_ms)->default_value(o.reward_timeout_ms), "wait for a score")(
      "reward-retries", po::value(&o.reward_retries)->default_value(o.reward_retries), "score retries before giving up")(
      "max-batches", po::value(&o.max_batches)->default_value(o.max_batches), "stop after this many batches (0 = never)");
  if (parse_options(args, "actor", "Generates, scores and pushes rollouts with the newest policy.", d).help) return 0;
  apply_runtime(threads, o.device);
  apply_transport(transport);
  install_stop_flag();
  const auto st = run_actor(o, g_stop);
  std::cerr << "actor " << o.rank << ": " << st.batches << " batches, " << st.rollouts << " rollouts, " << st.weight_loads
            << " weight loads, version " << st.version << ", " << st.seconds_waiting_for_weights << " s of " << st.seconds
            << " s waiting for weights, "
            << st.discarded_batches << " batches discarded\n";
  return 0;
}

int cmd_reward_serve(const Args& args) {
  RewardServiceOptions o;
  std::string kind = "task", program, model, device = "cpu";
  int threads = 0;
  TransportOptions transport;
  po::options_description d("keel reward serve");
  add_runtime_options(d, threads, device);
  add_transport_options(d, transport);
  d.add_options()("kind", po::value(&kind)->default_value(kind), "task | program | model")(
      "program", po::value(&program), "command of a reward program (kind program; docs/reward_protocol.md)")(
      "model", po::value(&model), "reward-model directory (kind model)")(
      "endpoint", po::value(&o.endpoint)->default_value(o.endpoint), "bind address")(
      "max-batch", po::value(&o.max_batch)->default_value(o.max_batch), "items scored together")(
      "max-wait-ms", po::value(&o.max_wait_ms)->default_value(o.max_wait_ms), "longest wait to fill a batch")(
      "missing-eos-penalty", po::value(&o.missing_eos_penalty)->default_value(o.missing_eos_penalty),
      "subtracted from responses that do not end in EOS");
  if (parse_options(args, "reward serve", "Scores rollouts for actors, batching requests.", d).help) return 0;
  apply_runtime(threads, device);
  apply_transport(transport);
  std::unique_ptr<Scorer> scorer;
  if (kind == "task") scorer = make_task_scorer();
  else if (kind == "program") {
    KEEL_CHECK(!program.empty(), "--kind program needs --program");
    scorer = make_program_scorer(program);
  } else if (kind == "model") {
    KEEL_CHECK(!model.empty(), "--kind model needs --model");
    scorer = make_model_scorer(model, device);
  } else KEEL_FAIL("unknown reward kind '" << kind << "' (task, program, model)");
  install_stop_flag();
  auto channel = wire::zmq_bind(wire::SocketKind::kRouter, o.endpoint);
  std::cerr << "reward: serving " << kind << " rewards on " << o.endpoint << "\n";
  const auto st = serve_rewards(o, *scorer, *channel, g_stop);
  std::cerr << "reward: " << st.requests << " requests, " << st.items << " items in " << st.batches << " batches, "
            << st.failed << " failed, " << st.receive.rejected << " bad messages\n";
  return 0;
}

namespace {

// What every actor-learner learner (PPO, online DPO) shares: its sockets, replay bounds, the
// held-out task evaluation.
struct LearnerNetworkOptions {
  RolloutServiceOptions net;
  ReplayOptions replay;
  bool keep_stale = false;
  int eval_per_family = 50;
  int eval_samples = 4;
  std::vector<std::string> eval_families;
  std::string tmpl = "chat";
  TransportOptions transport;
};

void add_learner_network_options(po::options_description& d, LearnerNetworkOptions& o) {
  add_transport_options(d, o.transport);
  d.add_options()("max-staleness", po::value(&o.replay.max_staleness)->default_value(o.replay.max_staleness),
                  "versions a rollout may lag")(
      "keep-stale", po::value(&o.keep_stale)->default_value(o.keep_stale), "keep (and count) rollouts beyond max-staleness")(
      "rollouts-endpoint", po::value(&o.net.rollouts_endpoint)->default_value(o.net.rollouts_endpoint), "bind: rollouts")(
      "weights-endpoint", po::value(&o.net.weights_endpoint)->default_value(o.net.weights_endpoint), "bind: announcements")(
      "chunks-endpoint", po::value(&o.net.chunks_endpoint)->default_value(o.net.chunks_endpoint), "bind: weight chunks")(
      "shared-dir", po::value(&o.net.shared_dir)->default_value(o.net.shared_dir), "shared-memory directory of the weights region same-host actors use ('none': every actor takes the chunks over the network)")(
      "rollout-log", po::value(&o.net.rollout_log), "HDF5 file logging every rollout")(
      "peer-timeout", po::value(&o.net.peer_timeout_s)->default_value(o.net.peer_timeout_s),
      "seconds without a message (rollouts or heartbeats) before an actor is reported silent")(
      "eval-per-family", po::value(&o.eval_per_family)->default_value(o.eval_per_family), "held-out tasks per family at eval")(
      "eval-samples", po::value(&o.eval_samples)->default_value(o.eval_samples), "sampled responses per held-out task at eval")(
      "eval-families", po::value(&o.eval_families)->multitoken(), "task families evaluated (default all)")(
      "template", po::value(&o.tmpl)->default_value(o.tmpl), "prompt template of the eval: chat | none");
}

// Held-out reward of the policy as it samples (at the actors' temperature, eval_samples draws per
// prompt), greedy exact-match accuracy per family, and the service's counters.
std::function<Scalars(Transformer&)> make_task_eval(const LearnerNetworkOptions& o, const Tokenizer& tok, RolloutService* service,
                                                    double temperature) {
  std::vector<TaskFamily> fams;
  for (const auto& f : o.eval_families) fams.push_back(parse_task_family(f));
  if (fams.empty()) fams.assign(std::begin(kAllTaskFamilies), std::end(kAllTaskFamilies));
  auto held = make_tasks(TaskSplit::kHeldOut, o.eval_per_family, 1, fams);
  const auto t = parse_prompt_template(o.tmpl);
  const int samples = o.eval_samples;
  return [held, t, samples, temperature, &tok, service](Transformer& m) {
    auto sampled = evaluate_tasks(m, tok, held, t, 32, 24, temperature, samples, 7);
    auto greedy = evaluate_tasks(m, tok, held, t);
    auto expected = expected_task_reward(m, tok, held, t, temperature > 0 ? temperature : 1.0);
    Scalars s{{"eval/task_reward", sampled.mean_accuracy}, {"eval/greedy_accuracy", greedy.mean_accuracy},
              {"eval/expected_reward", expected.mean_accuracy}};
    for (const auto& [fam, acc] : greedy.accuracy) s["eval/accuracy/" + fam] = acc;
    if (!service) return s;
    const auto rs = service->replay_stats();
    s["replay/dropped_stale"] = static_cast<double>(rs.dropped_stale);
    s["replay/received"] = static_cast<double>(rs.received);
    const auto ss = service->stats();
    s["wire/rejected"] = static_cast<double>(ss.receive.rejected);
    s["actors/alive"] = static_cast<double>(ss.peers_alive);
    s["actors/silent"] = static_cast<double>(ss.peers_silent);
    return s;
  };
}

void set_learner_defaults(TrainOptions& train, const std::string& out) {
  train.out_dir = out;
  train.warmup_steps = 0;
  train.min_lr_ratio = 1.0;
  train.weight_decay = 0.0;
  train.eval_every = 20;
  train.checkpoint_every = 20;
  train.log_every = 1;
  train.eval_at_start = true;
}

// The learner's side of the network. One process: its rollout service. Data-parallel: rank 0 owns
// the service and the others receive each update's rollouts by broadcast (data_parallel_rollouts.h).
struct LearnerSide {
  std::unique_ptr<RolloutService> service;  // rank 0 (or the only rank)
  std::unique_ptr<BroadcastRolloutSource> broadcast;
  std::unique_ptr<LeadPublisher> lead_publisher;
  RolloutSource* source = nullptr;
  WeightPublisher* publisher = nullptr;

  LearnerSide(const LearnerNetworkOptions& ln, const std::shared_ptr<DataParallel>& dp) {
    if (!dp || dp->rank() == 0) service = std::make_unique<RolloutService>(ln.net, ln.replay);
    source = service.get();
    publisher = service.get();
    if (dp) {
      broadcast = std::make_unique<BroadcastRolloutSource>(dp, service.get());
      lead_publisher = std::make_unique<LeadPublisher>(service.get());
      source = broadcast.get();
      publisher = lead_publisher.get();
    }
  }
  // The held-out evaluation, on the rank that owns the service (the loop evaluates there only).
  std::function<Scalars(Transformer&)> eval(const LearnerNetworkOptions& ln, const Tokenizer& tok, double temperature) {
    if (!service) return {};
    return make_task_eval(ln, tok, service.get(), temperature);
  }
  void report(const std::string& who, uint64_t version) {
    if (!service) return;
    const auto ss = service->stats();
    std::cerr << who << ": version " << version << ", " << ss.receive.accepted << " messages accepted, " << ss.receive.rejected
              << " rejected, " << service->replay_stats().dropped_stale << " stale rollouts dropped\n";
    service->stop();
  }
};

}  // namespace

int cmd_ppo(const Args& args) {
  std::string init, reference, device = "cpu", estimator = "gae", kl_estimator = "k1", rollouts_from;
  std::string critic_kind = "head", critic_init;
  double critic_lr = 0;
  int threads = 0;
  TrainOptions train;
  set_learner_defaults(train, "runs/ppo");
  train.lr = 1e-5;
  int64_t updates = 20;
  PpoOptions ppo;
  LearnerNetworkOptions ln;
  po::options_description d("keel ppo");
  add_train_options(d, train);
  add_runtime_options(d, threads, device);
  d.add_options()("init", po::value(&init)->required(), "policy to start from (an SFT model directory)")(
      "reference", po::value(&reference), "frozen reference model (default: --init)")(
      "updates", po::value(&updates)->default_value(updates), "PPO updates (steps = updates * epochs * minibatches)")(
      "rollouts-per-update", po::value(&ppo.rollouts_per_update)->default_value(ppo.rollouts_per_update), "rollouts per update")(
      "epochs", po::value(&ppo.epochs)->default_value(ppo.epochs), "passes over each update's rollouts")(
      "minibatches", po::value(&ppo.minibatches)->default_value(ppo.minibatches), "optimizer steps per epoch")(
      "clip", po::value(&ppo.clip)->default_value(ppo.clip), "policy ratio clip")(
      "value-clip", po::value(&ppo.value_clip)->default_value(ppo.value_clip), "value clip")(
      "vf-coef", po::value(&ppo.vf_coef)->default_value(ppo.vf_coef), "value loss coefficient")(
      "gamma", po::value(&ppo.gamma)->default_value(ppo.gamma), "discount")(
      "lambda", po::value(&ppo.lambda)->default_value(ppo.lambda), "GAE lambda")(
      "temperature", po::value(&ppo.temperature)->default_value(ppo.temperature), "the actors' sampling temperature")(
      "kl-coef", po::value(&ppo.kl.init)->default_value(ppo.kl.init), "initial KL coefficient beta")(
      "kl-target", po::value(&ppo.kl.target)->default_value(ppo.kl.target), "adaptive KL target (0 = fixed beta)")(
      "kl-horizon", po::value(&ppo.kl.horizon)->default_value(ppo.kl.horizon), "adaptive KL horizon")(
      "kl-estimator", po::value(&kl_estimator)->default_value(kl_estimator), "k1 | k2 | k3 | abs")(
      "whiten-advantages", po::value(&ppo.whiten_advantages)->default_value(ppo.whiten_advantages), "whiten advantages")(
      "estimator", po::value(&estimator)->default_value(estimator), "gae | grpo | rloo")(
      "critic", po::value(&critic_kind)->default_value(critic_kind),
      "GAE's value model: head (a value head on the policy) | separate (its own model, see --critic-init)")(
      "critic-init", po::value(&critic_init),
      "model directory the separate critic starts from (default: --init); a reward model's score head "
      "becomes the critic's initial value head")(
      "critic-lr", po::value(&critic_lr)->default_value(critic_lr), "the separate critic's peak learning rate (0 = --lr)")(
      "group-size", po::value(&ppo.group_size)->default_value(ppo.group_size), "responses per prompt (grpo/rloo)")(
      "rollouts-from", po::value(&rollouts_from),
      "train on the rollouts of this rollout log, in order, instead of live actors (no sockets, nothing published)");
  add_learner_network_options(d, ln);
  const auto parsed = parse_options(args, "ppo", "The PPO learner: trains on actors' rollouts, publishes weights.", d);
  if (parsed.help) return 0;
  const auto dev = apply_runtime(threads, device);
  apply_transport(ln.transport);
  if (ln.net.shared_dir == "none") ln.net.shared_dir.clear();
  install_stop_signal_handlers();
  ln.replay.drop_stale = !ln.keep_stale;
  ppo.estimator = parse_advantage_estimator(estimator);
  ppo.kl_estimator = parse_kl_estimator(kl_estimator);
  ppo.validate();
  train.steps = updates * ppo.steps_per_update();
  const auto tok_file = model_tokenizer_file(init);
  KEEL_CHECK(!tok_file.empty(), init << " holds no tokenizer");
  auto tok = load_tokenizer(tok_file);
  KEEL_CHECK(critic_kind == "head" || critic_kind == "separate", "--critic must be head or separate, not '" << critic_kind << "'");
  const bool separate_critic = ppo.estimator == AdvantageEstimator::kGae && critic_kind == "separate";
  KEEL_CHECK(critic_init.empty() || separate_critic, "--critic-init needs --critic separate (and the gae estimator)");
  auto config = load_model_config(init);
  config.value_head = ppo.estimator == AdvantageEstimator::kGae && !separate_critic;
  Transformer policy(config);
  load_weights(policy, load_safetensors(init + "/model.safetensors"), init, /*allow_new_heads=*/true);
  auto ref = load_model(reference.empty() ? init : reference, true);
  policy->to(dev);
  ref->to(dev);
  Transformer critic{nullptr};
  if (separate_critic) {
    critic = load_critic(critic_init.empty() ? init : critic_init, config, tok->identity());
    critic->to(dev);
  }
  ln.net.tokenizer_identity = tok->identity();
  ln.net.run_name = "keel-" + std::to_string(::getpid());
  auto dp = make_data_parallel(dev, train);
  const int64_t accum = train.grad_accum * (dp ? dp->world() : 1);
  if (!rollouts_from.empty()) {
    // Offline: every rank replays the log in the same order; no sockets, nothing published.
    LogRolloutSource source(rollouts_from);
    NullPublisher nowhere;
    const bool lead = !dp || dp->rank() == 0;
    PpoObjective objective(ppo, policy, ref, source, nowhere, accum, train.seed,
                           lead ? make_task_eval(ln, *tok, nullptr, ppo.temperature) : std::function<Scalars(Transformer&)>{});
    if (critic) objective.use_critic(critic, critic_lr > 0 ? critic_lr / train.lr : 1.0);
    TrainLoop loop(train, policy, objective, parsed.resolved, tok_file);
    loop.set_data_parallel(dp);
    return loop.run().interrupted ? 3 : 0;
  }
  LearnerSide side(ln, dp);
  PpoObjective objective(ppo, policy, ref, *side.source, *side.publisher, accum, train.seed, side.eval(ln, *tok, ppo.temperature));
  if (critic) objective.use_critic(critic, critic_lr > 0 ? critic_lr / train.lr : 1.0);
  TrainLoop loop(train, policy, objective, parsed.resolved, tok_file);
  loop.set_data_parallel(dp);
  const auto r = loop.run();
  side.report("ppo", objective.version());
  return r.interrupted ? 3 : 0;
}

}  // namespace keel

namespace keel {

int cmd_dpo_online(const Args& args) {
  std::string init, reference, device = "cpu", loss_type = "sigmoid";
  int threads = 0;
  double temperature = 1.0;
  int64_t updates = 40;
  TrainOptions train;
  set_learner_defaults(train, "runs/dpo-online");
  train.lr = 1e-5;
  DpoOptions dpo;
  OnlineDpoOptions online;
  LearnerNetworkOptions ln;
  po::options_description d("keel dpo online");
  add_train_options(d, train);
  add_runtime_options(d, threads, device);
  d.add_options()("init", po::value(&init)->required(), "policy to start from (an SFT model directory)")(
      "reference", po::value(&reference), "frozen reference model (default: --init)")(
      "updates", po::value(&updates)->default_value(updates), "optimizer steps; each publishes a new policy version")(
      "pairs-per-step", po::value(&online.pairs_per_step)->default_value(online.pairs_per_step), "fresh pairs per step")(
      "group-size", po::value(&online.group_size)->default_value(online.group_size),
      "responses per prompt the actors sample (their --group-size)")(
      "margin", po::value(&online.margin)->default_value(online.margin), "minimum score gap of a pair")(
      "pairs-out", po::value(&online.buffer), "append every mined pair to this preference buffer")(
      "loss", po::value(&loss_type)->default_value(loss_type), "sigmoid | cdpo | robust | hinge | ipo | simpo")(
      "beta", po::value(&dpo.loss.beta)->default_value(dpo.loss.beta), "DPO beta")(
      "label-smoothing", po::value(&dpo.loss.label_smoothing)->default_value(dpo.loss.label_smoothing), "cdpo / robust")(
      "sft-weight", po::value(&dpo.sft_weight)->default_value(dpo.sft_weight), "RPO: weight of the chosen response's NLL")(
      "max-len", po::value(&dpo.max_len)->default_value(dpo.max_len), "prompt + response tokens per row")(
      "temperature", po::value(&temperature)->default_value(temperature), "the actors' sampling temperature (for the eval)");
  add_learner_network_options(d, ln);
  const auto parsed = parse_options(args, "dpo online", "Online DPO: pairs mined from the actors' fresh rollouts, weights published back.", d);
  if (parsed.help) return 0;
  const auto dev = apply_runtime(threads, device);
  apply_transport(ln.transport);
  if (ln.net.shared_dir == "none") ln.net.shared_dir.clear();
  install_stop_signal_handlers();
  ln.replay.drop_stale = !ln.keep_stale;
  dpo.loss.type = parse_dpo_loss_type(loss_type);
  train.steps = updates;
  const auto tok_file = model_tokenizer_file(init);
  KEEL_CHECK(!tok_file.empty(), init << " holds no tokenizer");
  auto tok = load_tokenizer(tok_file);
  auto policy = load_model(init);
  auto ref = load_model(reference.empty() ? init : reference);
  policy->to(dev);
  ref->to(dev);
  ln.net.tokenizer_identity = tok->identity();
  ln.net.run_name = "keel-" + std::to_string(::getpid());
  online.tokenizer_identity = tok->identity();
  auto dp = make_data_parallel(dev, train);
  dpo.grad_accum = train.grad_accum * (dp ? dp->world() : 1);
  if (dp && dp->rank() != 0) online.buffer.clear();  // rank 0 alone writes the mined pairs
  LearnerSide side(ln, dp);
  OnlineDpoObjective objective(online, dpo, policy, ref, *side.source, *side.publisher, dev, side.eval(ln, *tok, temperature));
  TrainLoop loop(train, policy, objective, parsed.resolved, tok_file);
  loop.set_data_parallel(dp);
  const auto r = loop.run();
  side.report("dpo online", objective.version());
  return r.interrupted ? 3 : 0;
}

}  // namespace keel
