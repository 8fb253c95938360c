#include "learner/train_loop.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/progress.h"
#include "learner/train_state.h"

namespace keel {

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

std::string fmt(double v, int prec = 4) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}
}  // namespace

void install_stop_signal_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
bool stop_requested() { return g_stop.load(); }

void TrainOptions::validate() const {
  KEEL_CHECK(steps > 0, "steps must be positive");
  KEEL_CHECK(grad_accum > 0, "grad-accum must be positive");
  KEEL_CHECK(lr > 0, "lr must be positive");
  KEEL_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1, "min-lr-ratio must be in [0, 1]");
  KEEL_CHECK(warmup_steps >= 0, "warmup-steps must be >= 0");
  KEEL_CHECK(grad_clip >= 0, "grad-clip must be >= 0");
  KEEL_CHECK(!out_dir.empty(), "out must name a run directory");
}

double lr_at(const TrainOptions& o, int64_t step) {
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const double span = std::max<int64_t>(1, o.steps - o.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

TrainLoop::TrainLoop(TrainOptions options, Transformer model, Objective& objective, std::string run_config,
                     std::string tokenizer_file)
    : o_(std::move(options)), model_(std::move(model)), objective_(objective), run_config_(std::move(run_config)),
      tokenizer_file_(std::move(tokenizer_file)) {
  o_.validate();
}

TrainResult TrainLoop::run() {
  // Weight decay on matrices only: norms, biases, scalar heads' biases and embeddings are exempt.
  // Two parameter groups per trained model (the policy, then each companion), each with its lr scale.
  const std::vector<Companion> companions = objective_.companions();
  auto opts = torch::optim::AdamWOptions(o_.lr).betas({o_.beta1, o_.beta2}).eps(o_.adam_eps);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  std::vector<double> group_lr_scale;
  auto add_groups = [&](Transformer& m, double lr_scale) {
    std::vector<torch::Tensor> decay, no_decay;
    for (const auto& p : m->named_parameters()) {
      const bool is_embedding = p.key().find("wte") != std::string::npos || p.key().find("wpe") != std::string::npos ||
                                p.key().find("embed_tokens") != std::string::npos;
      (p.value().dim() >= 2 && !is_embedding ? decay : no_decay).push_back(p.value());
    }
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(o_.weight_decay)));
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(0.0)));
    group_lr_scale.insert(group_lr_scale.end(), {lr_scale, lr_scale});
  };
  add_groups(model_, 1.0);
  for (auto c : companions) {
    KEEL_CHECK(c.model && c.lr_scale > 0, "companion '" << c.name << "' needs a model and a positive lr scale");
    add_groups(c.model, c.lr_scale);
  }
  torch::optim::AdamW opt(std::move(groups), opts);

  TrainerState state;
  const std::string resume_from = o_.resume ? latest_checkpoint(o_.out_dir) : "";
  if (!resume_from.empty()) {
    std::string objective_state;
    state = load_training_checkpoint(resume_from, model_, opt, &objective_state, companions);
    objective_.load_state(objective_state);
    std::cerr << "resumed from " << resume_from << " at step " << state.step << "\n";
  }
  const int rank = dp_ ? dp_->rank() : 0, world = dp_ ? dp_->world() : 1;
  const bool lead = rank == 0;  // the rank that writes checkpoints, metrics and the model
  if (dp_) {
    dp_->broadcast_parameters(model_);
    for (auto c : companions) dp_->broadcast_parameters(c.model);
  }
  for (auto c : companions) c.model->train();
  std::vector<Transformer> trained_models{model_};
  for (auto c : companions) trained_models.push_back(c.model);
  std::unique_ptr<MetricsWriter> metrics_writer;
  if (lead) metrics_writer = std::make_unique<MetricsWriter>(o_.out_dir);
  struct {
    MetricsWriter* w;
    void log(int64_t step, const Scalars& s) {
      if (w) w->log(step, s);
    }
  } metrics{metrics_writer.get()};
  Progress progress(lead ? "train" : "train (rank " + std::to_string(rank) + ")", o_.steps, state.step, o_.log_every);
  TrainResult result;
  auto save = [&] {
    if (!lead) return std::string();
    return save_training_checkpoint(o_.out_dir, model_, opt, state, run_config_, tokenizer_file_, o_.keep_checkpoints,
                                    objective_.save_state(), companions);
  };
  auto evaluate = [&] {
    if (!lead) return;
    torch::NoGradGuard ng;
    model_->eval();
    auto s = objective_.evaluate(model_);
    model_->train();
    metrics.log(state.step, s);
    result.last_eval = s;
    std::string line = "eval step " + std::to_string(state.step);
    for (const auto& [k, v] : s) line += " | " + k + " " + fmt(v);
    if (progress.elapsed_seconds() >= 0) std::cerr << (isatty(2) ? "\n" : "") << line << "\n";
  };

  if (o_.eval_at_start && state.step == 0) evaluate();
  model_->train();
  auto window_start = std::chrono::steady_clock::now();
  int64_t window_tokens = 0;
  double window_loss = 0;
  int64_t window_steps = 0;
  while (state.step < o_.steps) {
    std::vector<std::unique_ptr<MicroBatch>> micro;
    int64_t units = 0, tokens = 0;
    for (int64_t m = 0; m < o_.grad_accum; ++m) {
      micro.push_back(objective_.batch(state.step, m * world + rank));
      units += micro.back()->units;
      tokens += micro.back()->tokens;
    }
    if (dp_) {
      // The step's loss is averaged over the units of every rank's micro-batches.
      auto t = dp_->allreduce_sum(torch::tensor({static_cast<double>(units), static_cast<double>(tokens)}, torch::kFloat64));
      units = static_cast<int64_t>(t[0].item<double>());
      tokens = static_cast<int64_t>(t[1].item<double>());
    }
    KEEL_CHECK(units > 0, "step " << state.step << " has no loss units (no target tokens in its batches)");
    opt.zero_grad();
    double loss_sum = 0;
    Scalars extra;
    for (size_t i = 0; i < micro.size(); ++i) {
      auto r = objective_.loss(model_, *micro[i]);
      if (dp_ && o_.overlap_allreduce && i + 1 == micro.size()) dp_->begin_gradient_sync(trained_models);  // overlaps this backward
      (r.sum / static_cast<double>(units)).backward();
      loss_sum += r.sum.item<double>();
      for (const auto& [k, v] : r.metrics) extra[k] += v / static_cast<double>(units);
    }
    bool stop = stop_requested();
    if (dp_) {
      if (!o_.overlap_allreduce) dp_->begin_gradient_sync(trained_models);  // everything all-reduced after backward
      dp_->finish_gradient_sync();
      // Reported loss and metrics over all ranks, and one decision about stopping.
      std::vector<double> v{loss_sum, stop ? 1.0 : 0.0};
      for (const auto& [k, x] : extra) v.push_back(x);
      auto t = dp_->allreduce_sum(torch::tensor(v, torch::kFloat64));
      loss_sum = t[0].item<double>();
      stop = t[1].item<double>() > 0;
      size_t i = 2;
      for (auto& [k, x] : extra) x = t[static_cast<int64_t>(i++)].item<double>();
    }
    double grad_norm = 0;
    if (o_.grad_clip > 0) {
      grad_norm = torch::nn::utils::clip_grad_norm_(model_->parameters(), o_.grad_clip);
      for (auto c : companions) torch::nn::utils::clip_grad_norm_(c.model->parameters(), o_.grad_clip);
    }
    const double lr = lr_at(o_, state.step);
    for (size_t g = 0; g < opt.param_groups().size(); ++g)
      static_cast<torch::optim::AdamWOptions&>(opt.param_groups()[g].options()).lr(lr * group_lr_scale[g]);
    opt.step();
    state.step += 1;
    state.tokens_seen += tokens;
    const Scalars objective_metrics = objective_.after_step(state.step, model_);
    const double loss = loss_sum / static_cast<double>(units);
    KEEL_CHECK(std::isfinite(loss), "loss is " << loss << " at step " << state.step << "; stopping");

    window_tokens += tokens;
    window_loss += loss;
    window_steps += 1;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
    const double tok_s = window_tokens / std::max(secs, 1e-9);
    progress.update(state.step, "loss " + fmt(loss) + " | lr " + fmt(lr, 6) + " | " + fmt(tok_s, 0) + " tok/s");
    if (state.step % o_.log_every == 0 || state.step == o_.steps) {
      Scalars s = {{"train/loss", window_loss / window_steps}, {"train/lr", lr}, {"train/tokens_per_s", tok_s},
                   {"train/grad_norm", grad_norm}, {"train/tokens_seen", static_cast<double>(state.tokens_seen)},
                   {"train/step_loss", loss}};
      for (const auto& [k, v] : extra) s["train/" + k] = v;
      // The share of the window's wall time spent waiting for gradient all-reduces (not overlapped).
      if (dp_) s["train/allreduce_wait_share"] = dp_->take_gradient_wait_seconds() / std::max(secs, 1e-9);
      metrics.log(state.step, s);
      window_start = std::chrono::steady_clock::now();
      window_tokens = 0;
      window_loss = 0;
      window_steps = 0;
    }
    // Checkpoint, then the objective's metrics, then publication: a version is announced only once
    // a resume would start from it.
    const bool last = state.step == o_.steps;
    if (!last && ((o_.checkpoint_every > 0 && state.step % o_.checkpoint_every == 0) || objective_.checkpoint_due(state.step)))
      save();
    if (!objective_metrics.empty()) metrics.log(state.step, objective_metrics);
    if (!last) objective_.on_durable(state.step, model_);
    if (o_.eval_every > 0 && state.step % o_.eval_every == 0 && state.step < o_.steps) evaluate();
    if (stop) {
      const auto dir = save();
      progress.finish();
      std::cerr << "stopped by signal at step " << state.step << "; checkpoint " << dir << "\n";
      result.interrupted = true;
      result.final_step = state.step;
      return result;
    }
  }
  progress.finish();
  evaluate();
  save();
  objective_.on_durable(state.step, model_);
  if (lead) {
    save_model(o_.out_dir + "/model", model_, tokenizer_file_);
    for (auto c : companions) save_model(o_.out_dir + "/" + c.name, c.model, tokenizer_file_);
    std::cerr << "model written to " << o_.out_dir << "/model\n";
  }
  if (dp_) dp_->barrier();  // the model is complete before any rank reports success
  result.final_step = state.step;
  return result;
}

}  // namespace keel
