#include "learner/ppo.h"

#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "learner/algos/gae.h"
#include "learner/algos/grpo.h"
#include "learner/algos/masked.h"
#include "learner/algos/ppo_loss.h"
#include "learner/algos/rloo.h"
#include "learner/sampling_contract.h"

namespace keel {

AdvantageEstimator parse_advantage_estimator(const std::string& s) {
  if (s == "gae") return AdvantageEstimator::kGae;
  if (s == "vtrace") return AdvantageEstimator::kVtrace;
  if (s == "grpo") return AdvantageEstimator::kGrpo;
  if (s == "dr-grpo") return AdvantageEstimator::kDrGrpo;
  if (s == "rloo") return AdvantageEstimator::kRloo;
  KEEL_FAIL("unknown advantage estimator '" << s << "' (gae, vtrace, grpo, dr-grpo, rloo)");
}

bool uses_values(AdvantageEstimator e) { return e == AdvantageEstimator::kGae || e == AdvantageEstimator::kVtrace; }

OffPolicyCorrection parse_off_policy_correction(const std::string& s) {
  if (s == "none") return OffPolicyCorrection::kNone;
  if (s == "decoupled") return OffPolicyCorrection::kDecoupled;
  KEEL_FAIL("--off-policy must be none or decoupled, not '" << s << "'");
}

KlPlacement parse_kl_placement(const std::string& s, AdvantageEstimator e) {
  if (s == "reward") return KlPlacement::kReward;
  if (s == "loss") return KlPlacement::kLoss;
  KEEL_CHECK(s == "auto", "--kl-in must be reward, loss or auto, not '" << s << "'");
  const bool grpo = e == AdvantageEstimator::kGrpo || e == AdvantageEstimator::kDrGrpo;
  return grpo ? KlPlacement::kLoss : KlPlacement::kReward;
}

torch::Tensor sequence_advantages(const torch::Tensor& score, const torch::Tensor& kl_seq, double beta_in_reward,
                                  AdvantageEstimator e, int64_t group_size) {
  auto reward = score - beta_in_reward * kl_seq;
  switch (e) {
    case AdvantageEstimator::kGrpo:
      return grpo_advantages(reward, group_size);
    case AdvantageEstimator::kDrGrpo:
      return grpo_advantages(reward, group_size, 1e-4, /*scale_by_std=*/false);
    case AdvantageEstimator::kRloo:
      return rloo_advantages(reward, group_size);
    case AdvantageEstimator::kGae:
    case AdvantageEstimator::kVtrace:
      break;
  }
  KEEL_FAIL("sequence advantages need a critic-free estimator (grpo, dr-grpo, rloo)");
}

void PpoOptions::validate() const {
  KEEL_CHECK(rollouts_per_update > 0 && epochs > 0 && minibatches > 0, "rollouts, epochs and minibatches must be positive");
  KEEL_CHECK(rollouts_per_update % minibatches == 0,
             "rollouts-per-update " << rollouts_per_update << " is not divisible by minibatches " << minibatches);
  KEEL_CHECK(temperature > 0, "PPO temperature must be positive (log-probs use logits / T)");
  KEEL_CHECK(uses_values(estimator) || group_size >= 2, "GRPO and RLOO need group-size >= 2");
  KEEL_CHECK(is_cap > 1, "--is-cap must be above 1, got " << is_cap);
  KEEL_CHECK(rollouts_per_update % group_size == 0, "rollouts-per-update must be a multiple of group-size");
  KEEL_CHECK(clip > 0 && (clip_high == 0 || clip_high >= clip),
             "--clip must be positive and --clip-high 0 (symmetric) or at least --clip, got " << clip << " / " << clip_high);
  KEEL_CHECK(dual_clip == 0 || dual_clip > 1, "--dual-clip must be 0 (off) or above 1, got " << dual_clip);
  KEEL_CHECK(kl_placement != KlPlacement::kLoss || (kl_estimator != KlEstimator::kK1 && kl_estimator != KlEstimator::kAbs),
             "--kl-in loss needs --kl-estimator k2 or k3: k1's expected gradient as a loss term is zero (and abs's is biased)");
}

namespace {

struct PpoBatch : MicroBatch {
  torch::Tensor ids, positions, key_mask, response_mask, old_logp, ref_logp, old_values, advantages, returns;
  torch::Tensor is_weights;  // undefined unless decoupled
  int64_t prompt_len = 0;
};

// Logits [B, R, V] that score the response tokens: position t predicts token t+1.
torch::Tensor response_logits(Transformer& m, const torch::Tensor& hidden, int64_t prompt_len, int64_t R) {
  return m->logits(hidden.narrow(1, prompt_len - 1, R));
}

}  // namespace

PpoUpdateBuilder::PpoUpdateBuilder(PpoOptions o, Transformer policy, Transformer reference, int64_t grad_accum, uint64_t seed)
    : o_(o), policy_(std::move(policy)), reference_(std::move(reference)), grad_accum_(grad_accum), seed_(seed),
      kl_(o.kl, o.kl.target > 0) {
  o_.validate();
  KEEL_CHECK((o_.rollouts_per_update / o_.minibatches) % grad_accum_ == 0,
             "minibatch size " << o_.rollouts_per_update / o_.minibatches << " is not divisible by grad-accum " << grad_accum_);
  reference_->eval();
  for (auto& p : reference_->parameters()) p.set_requires_grad(false);
}

void PpoUpdateBuilder::use_critic(Transformer critic, double lr_scale) {
  KEEL_CHECK(uses_values(o_.estimator), "a critic is only used by the GAE and V-trace estimators");
  KEEL_CHECK(critic->config().value_head, "the critic model needs a value head");
  KEEL_CHECK(lr_scale > 0, "the critic's learning-rate scale must be positive");
  critic_ = std::move(critic);
  critic_lr_scale_ = lr_scale;
}

std::vector<Companion> PpoUpdateBuilder::companions() const {
  if (!critic_) return {};
  return {Companion{"critic", critic_, critic_lr_scale_}};
}

int64_t PpoUpdateBuilder::rollouts_wanted() const {
  return std::max<int64_t>(0, o_.rollouts_per_update - static_cast<int64_t>(collected_.size()));
}

void PpoUpdateBuilder::add(std::vector<wire::Rollout> rollouts, uint64_t /*version*/) {
  for (auto& r : rollouts) collected_.push_back(std::move(r));
}

// The value model's estimates [B, R] for the response tokens of `in` (values at position t score
// the state before token t+1, like the log-probs).
static torch::Tensor response_values(Transformer& m, const ForwardInputs& in, int64_t prompt_len, int64_t R,
                                     const torch::Tensor* policy_hidden) {
  auto h = policy_hidden ? *policy_hidden : m->hidden(in);
  return m->value(h.narrow(1, prompt_len - 1, R)).to(torch::kFloat32);
}

// Rollouts -> left-padded prompt + right-padded response rows of u_, and the scores [N].
void PpoUpdateBuilder::fill_batch_tensors(const std::vector<wire::Rollout>& rollouts, torch::Tensor& score, Scalars& m) {
  const int64_t N = static_cast<int64_t>(rollouts.size());
  int64_t P = 0, R = 0;
  for (const auto& r : rollouts) {
    P = std::max<int64_t>(P, static_cast<int64_t>(r.prompt_tokens.size()));
    R = std::max<int64_t>(R, static_cast<int64_t>(r.response_tokens.size()));
  }
  KEEL_CHECK(P > 0, "rollouts without prompt tokens cannot be scored (each needs at least BOS)");
  const int32_t pad = std::max<int32_t>(0, static_cast<int32_t>(policy_->config().pad_id));
  auto tokens = torch::full({N, P + R}, pad, torch::kLong);
  auto key_mask = torch::zeros({N, P + R}, torch::kBool);
  auto old_logp = torch::zeros({N, R});
  auto resp_mask = torch::zeros({N, R});
  score = torch::zeros({N});
  double staleness = 0, resp_len = 0;
  for (int64_t i = 0; i < N; ++i) {
    const auto& r = rollouts[static_cast<size_t>(i)];
    const int64_t p = static_cast<int64_t>(r.prompt_tokens.size()), n = static_cast<int64_t>(r.response_tokens.size());
    for (int64_t j = 0; j < p; ++j) tokens[i][P - p + j] = r.prompt_tokens[static_cast<size_t>(j)];
    for (int64_t j = 0; j < n; ++j) {
      tokens[i][P + j] = r.response_tokens[static_cast<size_t>(j)];
      old_logp[i][j] = r.logprobs[static_cast<size_t>(j)];
    }
    key_mask.narrow(1, P - p, p + n)[i].fill_(true);
    resp_mask[i].narrow(0, 0, n).fill_(1.0);
    score[i] = r.score;
    staleness += static_cast<double>(u_.version - std::min(u_.version, r.policy_version));
    resp_len += static_cast<double>(n);
  }
  auto positions = (key_mask.to(torch::kLong).cumsum(1) - 1).clamp_min(0);
  const auto dev = policy_->device();
  u_.tokens = tokens.to(dev);
  u_.positions = positions.to(dev);
  u_.key_mask = key_mask.to(dev);
  u_.response_mask = resp_mask.to(dev);
  u_.old_logp = old_logp.to(dev);
  u_.prompt_len = P;
  m["ppo/staleness"] = staleness / static_cast<double>(N);
  m["ppo/response_length"] = resp_len / static_cast<double>(N);
  m["ppo/tokens"] = static_cast<double>(u_.key_mask.sum().item<int64_t>());
}

// Reference log-probs [N, R], the learner's own (proximal) log-probs u_.prox_logp and, for GAE and
// V-trace, the value model's estimates [N, R] (else undefined).
void PpoUpdateBuilder::reference_and_values(torch::Tensor& ref_logp, torch::Tensor& values, PhaseTimes& times) {
  torch::NoGradGuard ng;
  const int64_t N = u_.tokens.size(0), P = u_.prompt_len, R = u_.response_mask.size(1);
  std::vector<torch::Tensor> ref_parts, prox_parts, value_parts;
  const auto targets = u_.tokens.narrow(1, P, R);
  if (critic_) critic_->eval();
  for (int64_t b = 0; b < N; b += 32) {
    const int64_t n = std::min<int64_t>(32, N - b);
    ForwardInputs in{u_.tokens.narrow(0, b, n), u_.positions.narrow(0, b, n), u_.key_mask.narrow(0, b, n), {}};
    torch::Tensor hp;
    {
      auto timed = times.time("reference_logp");
      auto hr = reference_->hidden(in);
      ref_parts.push_back(token_logprobs(response_logits(reference_, hr, P, R), targets.narrow(0, b, n), o_.temperature));
    }
    {
      auto timed = times.time("proximal_logp");
      hp = policy_->hidden(in);
      prox_parts.push_back(token_logprobs(response_logits(policy_, hp, P, R), targets.narrow(0, b, n), o_.temperature));
    }
    if (uses_values(o_.estimator)) {
      auto timed = times.time("values");
      value_parts.push_back(critic_ ? response_values(critic_, in, P, R, nullptr) : response_values(policy_, in, P, R, &hp));
    }
  }
  if (critic_) critic_->train();
  ref_logp = torch::cat(ref_parts, 0);
  u_.prox_logp = torch::cat(prox_parts, 0) * u_.response_mask;
  if (!value_parts.empty()) values = torch::cat(value_parts, 0);
}

// The actor-learner gap (behaviour mu against the learner's pi_prox on the same tokens) and, for
// decoupled PPO, the truncated importance weights.
void PpoUpdateBuilder::off_policy_statistics(Scalars& m) {
  torch::NoGradGuard ng;
  const auto gap = (u_.prox_logp - u_.old_logp).abs() * u_.response_mask;
  m["ppo/logp_gap_mean"] = masked_mean(gap, u_.response_mask).item<double>();
  m["ppo/logp_gap_max"] = gap.max().item<double>();
  u_.is_weights = torch::Tensor();
  if (o_.off_policy != OffPolicyCorrection::kDecoupled) return;
  auto w = truncated_is_weights(u_.prox_logp, u_.old_logp, u_.response_mask, o_.is_cap, o_.is_level, o_.is_mask);
  u_.is_weights = w.weights;
  m["ppo/is_truncated"] = w.truncated_share.item<double>();
}

void PpoUpdateBuilder::advantages(const torch::Tensor& ref_logp, const torch::Tensor& values, const torch::Tensor& score,
                                  Scalars& m) {
  torch::NoGradGuard ng;
  // Decoupled PPO measures the KL (and so the reward) with the proximal policy's log-probs.
  const auto& logp = o_.off_policy == OffPolicyCorrection::kDecoupled ? u_.prox_logp : u_.old_logp;
  auto kl = kl_estimate(logp, ref_logp, o_.kl_estimator) * u_.response_mask;
  auto kl_k1_seq = ((logp - ref_logp) * u_.response_mask).sum(1);  // the controller's statistic (OAI/TRL)
  const double beta = kl_.value();
  const double beta_in_reward = o_.kl_placement == KlPlacement::kReward ? beta : 0.0;
  u_.ref_logp = ref_logp;
  auto score_d = score.to(u_.tokens.device());
  if (uses_values(o_.estimator)) {
    u_.old_values = values * u_.response_mask;
    auto rewards = kl_penalized_rewards(kl, u_.response_mask, score_d, beta_in_reward);
    Advantages a;
    if (o_.estimator == AdvantageEstimator::kGae) {
      a = gae(rewards, u_.old_values, u_.response_mask, o_.gamma, o_.lambda);
    } else {
      auto v = vtrace(u_.prox_logp - u_.old_logp, rewards, u_.old_values, u_.response_mask, o_.gamma);
      a = {v.pg_advantages, v.vs};
    }
    u_.returns = a.returns;
    u_.advantages = o_.whiten_advantages ? masked_whiten(a.advantages, u_.response_mask) : a.advantages;
    m["ppo/explained_variance"] = explained_variance(u_.old_values, u_.returns, u_.response_mask).item<double>();
  } else {
    auto seq_adv = sequence_advantages(score_d, kl.sum(1), beta_in_reward, o_.estimator, o_.group_size);
    u_.advantages = seq_adv.unsqueeze(1) * u_.response_mask;
    u_.old_values = torch::zeros_like(u_.advantages);
    u_.returns = torch::zeros_like(u_.advantages);
  }
  KEEL_CHECK_KIND(
      ErrorKind::kCorruptData, torch::isfinite(u_.advantages).all().item<bool>(),
      "non-finite advantages in the update of version " << u_.version << " (a non-finite score or log-prob): no step taken");
  kl_seq_mean_ = kl_k1_seq.mean().item<double>();
  m["ppo/score_mean"] = score.mean().item<double>();
  m["ppo/kl"] = kl_seq_mean_;
  m["ppo/kl_coef"] = beta;
}

Scalars PpoUpdateBuilder::prepare(uint64_t version, Transformer& /*policy*/) {
  KEEL_CHECK(!uses_values(o_.estimator) || critic_ || policy_->config().value_head,
             "PPO with GAE needs a value head on the policy (config keel.value_head) or a separate critic");
  KEEL_CHECK(static_cast<int64_t>(collected_.size()) == o_.rollouts_per_update,
             "a PPO update needs " << o_.rollouts_per_update << " rollouts, it was given " << collected_.size());
  Scalars m;
  u_.version = version;
  u_.order_epoch = -1;
  torch::Tensor score, ref_logp, values;
  if (!uses_values(o_.estimator)) {
    // Group baselines need each prompt's responses together: found by group_id, not by position.
    std::vector<wire::Rollout> grouped;
    grouped.reserve(collected_.size());
    for (size_t i : group_order(collected_, o_.group_size)) grouped.push_back(std::move(collected_[i]));
    collected_ = std::move(grouped);
  }
  PhaseTimes times(policy_->device());
  {
    auto timed = times.time("batch_tensors");
    fill_batch_tensors(collected_, score, m);
    collected_.clear();
  }
  reference_and_values(ref_logp, values, times);
  {
    auto timed = times.time("advantages");
    off_policy_statistics(m);
    advantages(ref_logp, values, score, m);
  }
  for (const auto& [k, v] : times.take("ppo/time/prepare/")) m[k] = v;
  return m;
}

std::unique_ptr<MicroBatch> PpoUpdateBuilder::batch(int64_t k, int64_t micro) {
  KEEL_CHECK(u_.tokens.defined(), "PPO batch before the update was prepared");
  const int64_t epoch = k / o_.minibatches, mb = k % o_.minibatches;
  const int64_t N = o_.rollouts_per_update, mb_size = N / o_.minibatches, micro_size = mb_size / grad_accum_;
  // Keyed by epoch, not by the first micro-batch: a data-parallel rank other than 0 never sees micro 0.
  if (u_.order_epoch != epoch) {
    u_.order_epoch = epoch;
    u_.order.resize(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) u_.order[static_cast<size_t>(i)] = i;
    std::mt19937_64 rng(seed_ * 1000003ull + u_.version * 101ull + static_cast<uint64_t>(epoch));
    std::shuffle(u_.order.begin(), u_.order.end(), rng);
  }
  std::vector<int64_t> rows(u_.order.begin() + mb * mb_size + micro * micro_size,
                            u_.order.begin() + mb * mb_size + (micro + 1) * micro_size);
  auto idx = torch::tensor(rows, torch::kLong).to(u_.tokens.device());
  auto b = std::make_unique<PpoBatch>();
  b->ids = u_.tokens.index_select(0, idx);
  b->positions = u_.positions.index_select(0, idx);
  b->key_mask = u_.key_mask.index_select(0, idx);
  b->response_mask = u_.response_mask.index_select(0, idx);
  // Decoupled PPO takes the ratio against the proximal policy and weights by pi_prox / mu.
  const bool decoupled = o_.off_policy == OffPolicyCorrection::kDecoupled;
  b->old_logp = (decoupled ? u_.prox_logp : u_.old_logp).index_select(0, idx);
  if (decoupled) b->is_weights = u_.is_weights.index_select(0, idx);
  b->ref_logp = u_.ref_logp.index_select(0, idx);
  b->old_values = u_.old_values.index_select(0, idx);
  b->advantages = u_.advantages.index_select(0, idx);
  b->returns = u_.returns.index_select(0, idx);
  b->prompt_len = u_.prompt_len;
  b->units = b->response_mask.sum().item<int64_t>();
  b->tokens = b->key_mask.sum().item<int64_t>();
  return b;
}

LossResult PpoUpdateBuilder::loss(Transformer& model, const MicroBatch& mb) {
  const auto& b = static_cast<const PpoBatch&>(mb);
  const int64_t R = b.response_mask.size(1);
  auto h = model->hidden({b.ids, b.positions, b.key_mask, {}});
  auto logits = response_logits(model, h, b.prompt_len, R);
  auto logp = token_logprobs(logits, b.ids.narrow(1, b.prompt_len, R), o_.temperature);
  const double n = static_cast<double>(b.units);
  const double clip_high = o_.clip_high > 0 ? o_.clip_high : o_.clip;
  auto pg = clipped_policy_loss(logp, b.old_logp, b.advantages, b.response_mask, o_.clip, clip_high, o_.dual_clip, b.is_weights);
  LossResult r;
  r.sum = pg.loss * n;
  if (o_.kl_placement == KlPlacement::kLoss) {
    auto kl = kl_loss(logp, b.ref_logp, b.response_mask, o_.kl_estimator);
    r.sum = r.sum + kl_.value() * kl * n;
    r.metrics["ppo/kl_loss"] = kl.item<double>() * n;
  }
  r.metrics["ppo/pg_loss"] = pg.loss.item<double>() * n;
  r.metrics["ppo/clipfrac"] = pg.clipfrac.item<double>() * n;
  r.metrics["ppo/approx_kl"] = pg.approx_kl.item<double>() * n;
  {
    torch::NoGradGuard ng;
    r.metrics["ppo/entropy"] = (entropy_from_logits(logits, o_.temperature) * b.response_mask).sum().item<double>();
  }
  if (uses_values(o_.estimator)) {
    ForwardInputs in{b.ids, b.positions, b.key_mask, {}};
    auto values =
        critic_ ? response_values(critic_, in, b.prompt_len, R, nullptr) : response_values(model, in, b.prompt_len, R, &h);
    auto vf = clipped_value_loss(values, b.old_values, b.returns, b.response_mask, o_.value_clip);
    r.sum = r.sum + o_.vf_coef * vf.loss * n;
    r.metrics["ppo/value_loss"] = vf.loss.item<double>() * n;
    r.metrics["ppo/value_clipfrac"] = vf.clipfrac.item<double>() * n;
  }
  return r;
}

Scalars PpoUpdateBuilder::finish_update() {
  kl_.update(kl_seq_mean_, o_.rollouts_per_update);
  u_.tokens = torch::Tensor();
  return {};
}

std::string PpoUpdateBuilder::save_state() const { return nlohmann::json{{"kl_coef", kl_.value()}}.dump() + "\n"; }

void PpoUpdateBuilder::load_state(const std::string& json) {
  if (json.empty()) return;
  kl_.set_value(nlohmann::json::parse(json).at("kl_coef").get<double>());
}

}  // namespace keel
