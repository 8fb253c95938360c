#include "learner/rl_learner.h"

#include <unistd.h>

#include <iostream>

#include "core/chat_template.h"
#include "core/model_loader.h"
#include "core/error.h"
#include "learner/actor_learner.h"
#include "learner/critic.h"
#include "learner/data_parallel_rollouts.h"
#include "learner/log_rollout_source.h"

namespace keel {

TrainOptions actor_learner_train_defaults(const std::string& out_dir) {
  TrainOptions t;
  t.out_dir = out_dir;
  t.lr = 1e-5;
  t.warmup_steps = 0;
  t.min_lr_ratio = 1.0;
  t.weight_decay = 0.0;
  t.eval_every = 20;
  t.checkpoint_every = 20;
  t.log_every = 1;
  t.eval_at_start = true;
  return t;
}

std::function<Scalars(Transformer&)> make_learner_evaluation(RolloutSideOptions o, const Tokenizer& tok, double temperature,
                                                             const std::string& model_dir) {
  o.eval.prompt_template = prompt_template_name(resolve_prompt_template(o.eval.prompt_template, model_dir));
  o.prompt_eval.prompt_template = o.eval.prompt_template;
  std::function<Scalars(Transformer&)> tasks, prompts;
  if (o.task_eval) tasks = make_heldout_task_eval(o.eval, tok, temperature);
  if (!o.prompt_eval.prompts_file.empty()) {
    KEEL_CHECK(!o.eval_reward_endpoint.empty(),
               "--eval-prompts needs the reward service's endpoint (--eval-reward; keel launch gives it)");
    prompts = make_prompt_eval_metrics(o.prompt_eval, tok, temperature,
                                       reward_service_scores(o.eval_reward_endpoint, "learner-eval", o.eval_reward_timeout_ms));
  }
  return [tasks, prompts](Transformer& m) {
    Scalars s;
    if (tasks) s = tasks(m);
    if (prompts)
      for (const auto& [k, v] : prompts(m)) s[k] = v;
    return s;
  };
}

namespace {

// The rollout side's counters, logged with every update and evaluation.
Scalars rollout_side_status(const RolloutService& service) {
  const auto rs = service.replay_stats();
  const auto ss = service.stats();
  const auto& c = ss.credits;
  return {{"replay/received", static_cast<double>(rs.received)},
          {"replay/dropped_stale", static_cast<double>(rs.dropped_stale)},
          {"replay/trained_share", rs.received > 0 ? static_cast<double>(rs.taken) / static_cast<double>(rs.received) : 0.0},
          {"wire/rejected", static_cast<double>(ss.receive.rejected)},
          {"replay/refused_batches", static_cast<double>(ss.refused_batches)},
          {"actors/alive", static_cast<double>(ss.peers_alive)},
          {"actors/silent", static_cast<double>(ss.peers_silent)},
          {"credits/granted", static_cast<double>(c.granted)},
          {"credits/refused", static_cast<double>(c.refused_full + c.refused_version)},
          {"credits/lapsed", static_cast<double>(c.lapsed)},
          {"credits/in_flight_rollouts", static_cast<double>(c.in_flight_rollouts)},
          {"credits/ungranted_batches", static_cast<double>(c.ungranted_batches)}};
}

// The learner's side of the network. One process: its rollout service. Data-parallel: rank 0 owns
// the service and the others receive each update's rollouts by broadcast.
struct RolloutSide {
  std::unique_ptr<RolloutService> service;  // rank 0 (or the only rank)
  std::unique_ptr<BroadcastRolloutSource> broadcast;
  std::unique_ptr<LeadPublisher> lead_publisher;
  RolloutSource* source = nullptr;
  WeightPublisher* publisher = nullptr;

  // `contract`: the sampling settings the learner trains under (its tokenizer is added here).
  RolloutSide(RolloutSideOptions o, SamplingContract contract, const std::string& tokenizer_identity,
              const std::shared_ptr<DataParallel>& dp) {
    if (o.net.shared_dir == "none") o.net.shared_dir.clear();
    o.replay.drop_stale = !o.keep_stale;
    o.net.tokenizer_identity = tokenizer_identity;
    contract.tokenizer = tokenizer_identity;
    o.net.contract = contract;
    o.net.run_name = "keel-" + std::to_string(::getpid());
    if (!dp || dp->rank() == 0) service = std::make_unique<RolloutService>(o.net, o.replay);
    source = service.get();
    publisher = service.get();
    if (dp) {
      broadcast = std::make_unique<BroadcastRolloutSource>(dp, service.get());
      lead_publisher = std::make_unique<LeadPublisher>(service.get());
      source = broadcast.get();
      publisher = lead_publisher.get();
    }
  }
  // Evaluation and status on the rank that owns the service (the loop evaluates there only).
  void attach(ActorLearner& runtime, const RolloutSideOptions& o, const Tokenizer& tok, double temperature,
              const std::string& model_dir) {
    if (!service) return;
    runtime.set_evaluation(make_learner_evaluation(o, tok, temperature, model_dir));
    runtime.set_status([s = service.get()] { return rollout_side_status(*s); });
  }
  void report(const std::string& who, uint64_t version) {
    if (!service) return;
    const auto ss = service->stats();
    const auto rs = service->replay_stats();
    std::cerr << who << ": version " << version << ", " << ss.receive.accepted << " messages accepted, " << ss.receive.rejected
              << " rejected, " << ss.refused_batches << " batches refused (sampling contract), " << rs.dropped_stale
              << " stale rollouts dropped, " << rs.taken << " of " << rs.received << " received rollouts trained on\n";
    service->stop();
  }
};

struct PpoModels {
  Transformer policy{nullptr}, reference{nullptr}, critic{nullptr};
};

PpoModels load_ppo_models(const PpoLearnerOptions& o, const std::string& tokenizer_identity, torch::Device dev) {
  KEEL_CHECK(o.critic == "head" || o.critic == "separate", "--critic must be head or separate, not '" << o.critic << "'");
  const bool separate_critic = uses_values(o.ppo.estimator) && o.critic == "separate";
  KEEL_CHECK(o.critic_init.empty() || separate_critic, "--critic-init needs --critic separate (and the gae or vtrace estimator)");
  PpoModels m;
  auto policy = ModelLoadOptions::on(dev);
  policy.value_head = uses_values(o.ppo.estimator) && !separate_critic;
  m.policy = load_model_as(o.init, policy);
  m.reference = load_model_as(o.reference.empty() ? o.init : o.reference, ModelLoadOptions::on(dev));
  if (separate_critic) {
    m.critic = load_critic(o.critic_init.empty() ? o.init : o.critic_init, m.policy->config(), tokenizer_identity);
    m.critic->to(dev);
  }
  return m;
}

}  // namespace

int run_ppo_learner(PpoLearnerOptions o) {
  const torch::Device dev(o.device);
  o.ppo.validate();
  o.train.steps = o.updates * o.ppo.steps_per_update();
  const auto tok_file = require_tokenizer_file(o.init);
  auto tok = load_tokenizer(tok_file);
  auto models = load_ppo_models(o, tok->identity(), dev);
  auto dp = make_data_parallel(dev, o.train);
  PpoUpdateBuilder builder(o.ppo, models.policy, models.reference, global_micro_batches(o.train, dp), o.train.seed);
  if (models.critic) builder.use_critic(models.critic, o.critic_lr > 0 ? o.critic_lr / o.train.lr : 1.0);
  if (!o.rollouts_from.empty()) {
    // Offline: every rank replays the log in the same order; no sockets, nothing published.
    LogRolloutSource source(o.rollouts_from);
    NullPublisher nowhere;
    ActorLearner runtime(o.train, models.policy, builder, source, nowhere, o.run_config, tok_file);
    runtime.set_data_parallel(dp);
    if (!dp || dp->rank() == 0) runtime.set_evaluation(make_learner_evaluation(o.side, *tok, o.ppo.temperature, o.init));
    return runtime.run().interrupted ? 3 : 0;
  }
  const auto groups = uses_values(o.ppo.estimator) ? 0u : static_cast<uint32_t>(o.ppo.group_size);  // 0: any
  RolloutSide side(o.side, {o.ppo.temperature, groups}, tok->identity(), dp);
  ActorLearner runtime(o.train, models.policy, builder, *side.source, *side.publisher, o.run_config, tok_file);
  runtime.set_data_parallel(dp);
  side.attach(runtime, o.side, *tok, o.ppo.temperature, o.init);
  const auto r = runtime.run();
  side.report("ppo", runtime.version());
  return r.interrupted ? 3 : 0;
}

int run_online_dpo_learner(OnlineDpoLearnerOptions o) {
  const torch::Device dev(o.device);
  o.train.steps = o.updates;
  auto [policy, tok_file, tok] = load_model_dir(o.init, ModelLoadOptions::on(dev));
  auto ref = load_model_as(o.reference.empty() ? o.init : o.reference, ModelLoadOptions::on(dev));
  o.online.tokenizer_identity = tok->identity();
  auto dp = make_data_parallel(dev, o.train);
  o.dpo.grad_accum = global_micro_batches(o.train, dp);
  if (dp && dp->rank() != 0) o.online.buffer.clear();  // rank 0 alone writes the mined pairs
  OnlineDpoUpdateBuilder builder(o.online, o.dpo, ref, policy->config().pad_id, policy->config().vocab_size, dev);
  RolloutSide side(o.side, {o.temperature, static_cast<uint32_t>(o.online.group_size)}, tok->identity(), dp);
  ActorLearner runtime(o.train, policy, builder, *side.source, *side.publisher, o.run_config, tok_file);
  runtime.set_data_parallel(dp);
  side.attach(runtime, o.side, *tok, o.temperature, o.init);
  const auto r = runtime.run();
  side.report("dpo online", runtime.version());
  return r.interrupted ? 3 : 0;
}

}  // namespace keel
