#include "learner/train_loop.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/malloc_policy.h"
#include "core/progress.h"
#include "learner/checkpoint_writer.h"
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

int64_t global_micro_batches(const TrainOptions& o, const std::shared_ptr<DataParallel>& dp) {
  return o.grad_accum * (dp ? dp->world() : 1);
}

double lr_at(const TrainOptions& o, int64_t step) {
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const double span = std::max<int64_t>(1, o.steps - o.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * cosine);
}

// What a run holds between begin() and its end.
struct TrainLoop::Run {
  std::vector<Companion> companions;
  std::unique_ptr<torch::optim::AdamW> opt;
  std::vector<double> group_lr_scale;  // per parameter group
  std::vector<Transformer> trained;    // the policy, then each companion
  TrainerState state;
  std::unique_ptr<MetricsWriter> metrics;  // lead rank only
  std::unique_ptr<Progress> progress;
  std::unique_ptr<CheckpointWriter> writer;  // lead rank with background checkpoints only
  TrainResult result;
  bool lead = true;
  int rank = 0, world = 1;
  // The window of steps since the last metrics line.
  std::chrono::steady_clock::time_point window_start = std::chrono::steady_clock::now();
  int64_t window_tokens = 0, window_steps = 0;
  double window_loss = 0;
};

TrainLoop::TrainLoop(TrainOptions options, Transformer model, Objective& objective, std::string run_config,
                     std::string tokenizer_file)
    : o_(std::move(options)), model_(std::move(model)), objective_(objective), run_config_(std::move(run_config)),
      tokenizer_file_(std::move(tokenizer_file)), phases_(model_->device()) {
  o_.validate();
}

TrainLoop::~TrainLoop() = default;

namespace {

// AdamW with two parameter groups per trained model (the policy, then each companion): weight
// decay on matrices only (norms, biases, scalar heads' biases and embeddings are exempt).
std::unique_ptr<torch::optim::AdamW> make_optimizer(const TrainOptions& o, const std::vector<Transformer>& models,
                                                    const std::vector<double>& lr_scales, std::vector<double>& group_lr_scale) {
  auto opts = torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.adam_eps);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  for (size_t i = 0; i < models.size(); ++i) {
    std::vector<torch::Tensor> decay, no_decay;
    for (const auto& p : models[i]->named_parameters()) {
      const bool is_embedding = p.key().find("wte") != std::string::npos || p.key().find("wpe") != std::string::npos ||
                                p.key().find("embed_tokens") != std::string::npos;
      (p.value().dim() >= 2 && !is_embedding ? decay : no_decay).push_back(p.value());
    }
    groups.emplace_back(
        decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(o.weight_decay)));
    groups.emplace_back(no_decay,
                        std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(opts).weight_decay(0.0)));
    group_lr_scale.insert(group_lr_scale.end(), {lr_scales[i], lr_scales[i]});
  }
  return std::make_unique<torch::optim::AdamW>(std::move(groups), opts);
}

}  // namespace

void TrainLoop::begin() {
  run_ = std::make_unique<Run>();
  Run& r = *run_;
  r.companions = objective_.companions();
  r.trained = {model_};
  std::vector<double> lr_scales{1.0};
  for (const auto& c : r.companions) {
    KEEL_CHECK(c.model && c.lr_scale > 0, "companion '" << c.name << "' needs a model and a positive lr scale");
    r.trained.push_back(c.model);
    lr_scales.push_back(c.lr_scale);
  }
  for (auto& m : r.trained) m->set_activation_checkpointing(o_.activation_checkpointing);
  if (o_.activation_checkpointing) return_freed_memory();  // the run chose memory over time
  r.opt = make_optimizer(o_, r.trained, lr_scales, r.group_lr_scale);
  const std::string resume_from = o_.resume ? latest_checkpoint(o_.out_dir) : "";
  if (!resume_from.empty()) {
    std::string objective_state;
    r.state = load_training_checkpoint(resume_from, model_, *r.opt, &objective_state, r.companions);
    objective_.load_state(objective_state);
    std::cerr << "resumed from " << resume_from << " at step " << r.state.step << "\n";
  }
  r.rank = dp_ ? dp_->rank() : 0;
  r.world = dp_ ? dp_->world() : 1;
  r.lead = r.rank == 0;  // the rank that writes checkpoints, metrics and the model
  if (dp_)
    for (auto& m : r.trained) dp_->broadcast_parameters(m);
  for (auto& m : r.trained) m->train();
  if (r.lead) r.metrics = std::make_unique<MetricsWriter>(o_.out_dir);
  if (r.lead && o_.background_checkpoints) r.writer = std::make_unique<CheckpointWriter>(o_.out_dir, o_.keep_checkpoints);
  r.progress = std::make_unique<Progress>(r.lead ? "train" : "train (rank " + std::to_string(r.rank) + ")", o_.steps,
                                          r.state.step, o_.log_every);
  if (o_.eval_at_start && r.state.step == 0) evaluate();
  model_->train();
  r.window_start = std::chrono::steady_clock::now();
}

int64_t TrainLoop::step() const {
  KEEL_CHECK(run_, "TrainLoop::begin() must come first");
  return run_->state.step;
}

bool TrainLoop::lead() const { return !dp_ || dp_->rank() == 0; }

void TrainLoop::log(const Scalars& s) {
  if (run_->metrics && !s.empty()) run_->metrics->log(run_->state.step, s);
}

std::string TrainLoop::save() {
  if (!run_->lead) return std::string();
  if (run_->writer) run_->writer->wait();  // the newer checkpoint must not be overtaken by the older
  return save_training_checkpoint(o_.out_dir, model_, *run_->opt, run_->state, run_config_, tokenizer_file_, o_.keep_checkpoints,
                                  objective_.save_state(), run_->companions);
}

void TrainLoop::save_in_background(std::function<void(const CheckpointSnapshot&)> written,
                                   std::function<void(const std::string&)> failed) {
  Run& r = *run_;
  r.writer->wait();  // one copy held at a time: the one before is written first, and its memory reused
  r.writer->write(snapshot_training_state(model_, *r.opt, r.state, run_config_, tokenizer_file_, objective_.save_state(),
                                          r.companions, /*copy=*/true, r.writer->take_spare()),
                  std::move(written), std::move(failed));
}

void TrainLoop::wait_for_checkpoint() {
  if (run_ && run_->writer) run_->writer->wait();
}

double TrainLoop::last_checkpoint_write_seconds() const {
  return run_ && run_->writer ? run_->writer->last_write_seconds() : 0.0;
}

void TrainLoop::evaluate() {
  if (!run_->lead) return;
  torch::NoGradGuard ng;
  model_->eval();
  auto s = objective_.evaluate(model_);
  model_->train();
  log(s);
  run_->result.last_eval = s;
  std::string line = "eval step " + std::to_string(run_->state.step);
  for (const auto& [k, v] : s) line += " | " + k + " " + fmt(v);
  std::cerr << (isatty(2) ? "\n" : "") << line << "\n";
}

TrainLoop::Checkpoint TrainLoop::checkpoint_if_due(bool force, std::function<void(const CheckpointSnapshot&)> written,
                                                   std::function<void(const std::string&)> failed) {
  const int64_t s = run_->state.step;
  if (s >= o_.steps || !(force || (o_.checkpoint_every > 0 && s % o_.checkpoint_every == 0))) return Checkpoint::kNone;
  if (!run_->writer) {
    save();
    return Checkpoint::kWritten;
  }
  save_in_background(std::move(written), std::move(failed));
  return Checkpoint::kWriting;
}

void TrainLoop::evaluate_if_due() {
  const int64_t s = run_->state.step;
  if (o_.eval_every > 0 && s % o_.eval_every == 0 && s < o_.steps) evaluate();
}

bool TrainLoop::train_step() {
  Run& r = *run_;
  std::vector<std::unique_ptr<MicroBatch>> micro;
  int64_t units = 0, tokens = 0;
  {
    auto timed = phases_.time("batch");
    for (int64_t m = 0; m < o_.grad_accum; ++m) {
      micro.push_back(objective_.batch(r.state.step, m * r.world + r.rank));
      units += micro.back()->units;
      tokens += micro.back()->tokens;
    }
  }
  if (dp_) {
    // The step's loss is averaged over the units of every rank's micro-batches.
    auto t = dp_->allreduce_sum(torch::tensor({static_cast<double>(units), static_cast<double>(tokens)}, torch::kFloat64));
    units = static_cast<int64_t>(t[0].item<double>());
    tokens = static_cast<int64_t>(t[1].item<double>());
  }
  KEEL_CHECK(units > 0, "step " << r.state.step << " has no loss units (no target tokens in its batches)");
  r.opt->zero_grad();
  double loss_sum = 0;
  Scalars extra;
  {
    auto timed = phases_.time("forward_backward");
    for (size_t i = 0; i < micro.size(); ++i) {
      auto l = objective_.loss(model_, *micro[i]);
      if (dp_ && o_.overlap_allreduce && i + 1 == micro.size()) dp_->begin_gradient_sync(r.trained);  // overlaps this backward
      (l.sum / static_cast<double>(units)).backward();
      loss_sum += l.sum.item<double>();
      for (const auto& [k, v] : l.metrics) extra[k] += v / static_cast<double>(units);
    }
  }
  bool stop = stop_requested();
  if (dp_) {
    auto timed = phases_.time("gradient_sync");
    if (!o_.overlap_allreduce) dp_->begin_gradient_sync(r.trained);  // everything all-reduced after backward
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
  const double lr = lr_at(o_, r.state.step);
  {
    auto timed = phases_.time("optimizer");
    if (o_.grad_clip > 0) {
      grad_norm = torch::nn::utils::clip_grad_norm_(model_->parameters(), o_.grad_clip);
      for (auto c : r.companions) torch::nn::utils::clip_grad_norm_(c.model->parameters(), o_.grad_clip);
    }
    for (size_t g = 0; g < r.opt->param_groups().size(); ++g)
      static_cast<torch::optim::AdamWOptions&>(r.opt->param_groups()[g].options()).lr(lr * r.group_lr_scale[g]);
    r.opt->step();
  }
  r.state.step += 1;
  r.state.tokens_seen += tokens;
  const double loss = loss_sum / static_cast<double>(units);
  KEEL_CHECK(std::isfinite(loss), "loss is " << loss << " at step " << r.state.step << "; stopping");
  log_step(loss, lr, grad_norm, tokens, extra);
  return stop;
}

void TrainLoop::log_step(double loss, double lr, double grad_norm, int64_t tokens, const Scalars& extra) {
  Run& r = *run_;
  r.window_tokens += tokens;
  r.window_loss += loss;
  r.window_steps += 1;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - r.window_start).count();
  const double tok_s = r.window_tokens / std::max(secs, 1e-9);
  r.progress->update(r.state.step, "loss " + fmt(loss) + " | lr " + fmt(lr, 6) + " | " + fmt(tok_s, 0) + " tok/s");
  if (r.state.step % o_.log_every != 0 && r.state.step != o_.steps) return;
  Scalars s = {{"train/loss", r.window_loss / r.window_steps},
               {"train/lr", lr},
               {"train/tokens_per_s", tok_s},
               {"train/grad_norm", grad_norm},
               {"train/tokens_seen", static_cast<double>(r.state.tokens_seen)},
               {"train/step_loss", loss}};
  for (const auto& [k, v] : extra) s["train/" + k] = v;
  // The share of the window's wall time spent waiting for gradient all-reduces (not overlapped).
  if (dp_) s["train/allreduce_wait_share"] = dp_->take_gradient_wait_seconds() / std::max(secs, 1e-9);
  log(s);
  r.window_start = std::chrono::steady_clock::now();
  r.window_tokens = 0;
  r.window_loss = 0;
  r.window_steps = 0;
}

TrainResult TrainLoop::interrupted() {
  const auto dir = save();
  run_->progress->finish();
  std::cerr << "stopped by signal at step " << run_->state.step << "; checkpoint " << dir << "\n";
  run_->result.interrupted = true;
  run_->result.final_step = run_->state.step;
  return run_->result;
}

TrainResult TrainLoop::finish() {
  Run& r = *run_;
  r.progress->finish();
  evaluate();
  save();
  if (r.lead) {
    save_model(o_.out_dir + "/model", model_, tokenizer_file_);
    for (auto c : r.companions) save_model(o_.out_dir + "/" + c.name, c.model, tokenizer_file_);
    std::cerr << "model written to " << o_.out_dir << "/model\n";
  }
  if (dp_) dp_->barrier();  // the model is complete before any rank reports success
  r.result.final_step = r.state.step;
  return r.result;
}

TrainResult TrainLoop::run() {
  begin();
  while (!done()) {
    const bool stop = train_step();
    checkpoint_if_due();
    evaluate_if_due();
    if (stop) return interrupted();
  }
  return finish();
}

}  // namespace keel
