#include "learner/actor_learner.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel {

class ActorLearner::Steps : public Objective {
 public:
  explicit Steps(ActorLearner& r) : r_(r) {}
  std::unique_ptr<MicroBatch> batch(int64_t step, int64_t micro) override {
    return r_.builder_.batch(step % r_.builder_.steps_per_update(), micro);
  }
  LossResult loss(Transformer& model, const MicroBatch& b) override { return r_.builder_.loss(model, b); }
  std::vector<Companion> companions() const override { return r_.builder_.companions(); }
  Scalars evaluate(Transformer& model) override {
    Scalars s = r_.eval_ ? r_.eval_(model) : Scalars{};
    if (r_.status_)
      for (const auto& [k, v] : r_.status_()) s[k] = v;
    r_.write_status({}, s);
    return s;
  }
  // The runtime's state and the builder's, in one JSON object.
  std::string save_state() const override {
    nlohmann::json j = nlohmann::json::object();
    const auto b = r_.builder_.save_state();
    if (!b.empty()) j = nlohmann::json::parse(b);
    j["version"] = r_.version_;
    j["rollouts_trained"] = r_.rollouts_trained_;
    return j.dump() + "\n";
  }
  void load_state(const std::string& json) override {
    if (json.empty()) return;
    const auto j = nlohmann::json::parse(json);
    r_.version_ = j.at("version").get<uint64_t>();
    r_.rollouts_trained_ = j.value("rollouts_trained", int64_t{0});
    r_.builder_.load_state(json);
  }

 private:
  ActorLearner& r_;
};

ActorLearner::ActorLearner(TrainOptions train, Transformer policy, UpdateBuilder& builder, RolloutSource& source,
                           WeightPublisher& publisher, std::string run_config, std::string tokenizer_file)
    : policy_(policy), builder_(builder), source_(source), publisher_(publisher), steps_(std::make_unique<Steps>(*this)),
      out_dir_(train.out_dir), phases_(policy_->device()) {
  KEEL_CHECK(train.steps % builder_.steps_per_update() == 0,
             "steps " << train.steps << " are not a whole number of updates of " << builder_.steps_per_update() << " steps");
  loop_ =
      std::make_unique<TrainLoop>(std::move(train), std::move(policy), *steps_, std::move(run_config), std::move(tokenizer_file));
}

ActorLearner::~ActorLearner() = default;

void ActorLearner::set_data_parallel(std::shared_ptr<DataParallel> dp) { loop_->set_data_parallel(std::move(dp)); }
void ActorLearner::set_evaluation(std::function<Scalars(Transformer&)> eval) { eval_ = std::move(eval); }
void ActorLearner::set_status(std::function<Scalars()> status) { status_ = std::move(status); }

TrainResult ActorLearner::run() {
  loop_->begin();
  cycle_start_ = std::chrono::steady_clock::now();
  // Actors start from (or, resumed, return to) this version.
  phases_.run("publish", [&] { publisher_.publish(version_, policy_); });
  while (!loop_->done()) {
    collect_and_prepare();
    if (train_update()) return loop_->interrupted();
  }
  auto result = loop_->finish();
  publisher_.publish(version_, policy_);
  return result;
}

void ActorLearner::collect_and_prepare() {
  update_start_ = std::chrono::steady_clock::now();
  for (int64_t want = builder_.rollouts_wanted(); want > 0; want = builder_.rollouts_wanted())
    builder_.add(source_.next(static_cast<size_t>(want), version_), version_);
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - update_start_).count();
  phases_.add("wait_rollouts", waited);
  const bool was_training = policy_->is_training();
  policy_->eval();
  phases_.run("prepare", [&] { update_metrics_ = builder_.prepare(version_, policy_); });
  if (was_training) policy_->train();
  update_metrics_[builder_.metric_prefix() + "/wait_seconds"] = waited;
}

bool ActorLearner::train_update() {
  const int64_t per_update = builder_.steps_per_update();
  while (true) {
    const bool stop = loop_->train_step();
    if (loop_->step() % per_update != 0) {
      phases_.run("checkpoint", [&] { loop_->checkpoint_if_due(); });
      phases_.run("eval", [&] { loop_->evaluate_if_due(); });
      if (stop) return true;
      continue;
    }
    // The update is complete: checkpoint, then its metrics, then publication, so that a version is
    // announced only once a resume would start from it. Publication and evaluation count in the
    // next update's time.
    // With background checkpoints the writer publishes the version from the checkpoint's own copy
    // once it is on disk, while this thread goes on to the next update.
    Scalars metrics = finish_update();
    auto written = [this, v = version_](const CheckpointSnapshot& s) {
      const auto t0 = std::chrono::steady_clock::now();
      publisher_.publish_tensors(v, s.models.front().tensors);
      background_publish_seconds_.store(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    };
    // A failed write means this version is never published: a wait for its rollouts must end.
    auto failed = [this](const std::string& what) { source_.abort("a checkpoint written in the background failed: " + what); };
    TrainLoop::Checkpoint c = TrainLoop::Checkpoint::kNone;
    phases_.run("checkpoint", [&] { c = loop_->checkpoint_if_due(builder_.checkpoint_each_update(), written, failed); });
    add_phase_seconds(metrics);
    // The last background checkpoint's write and publication, which overlap the phases above.
    if (const double w = loop_->last_checkpoint_write_seconds(); w > 0) {
      metrics[builder_.metric_prefix() + "/background/checkpoint_seconds"] = w;
      metrics[builder_.metric_prefix() + "/background/publish_seconds"] = background_publish_seconds_.load();
    }
    loop_->log(metrics);
    write_status(metrics, {});
    // A builder that does not checkpoint every update (online DPO) publishes from here while an
    // earlier checkpoint may still be writing (and then publishing): that one goes out first.
    if (!loop_->done() && c != TrainLoop::Checkpoint::kWriting)
      phases_.run("publish", [&] {
        loop_->wait_for_checkpoint();
        publisher_.publish(version_, policy_);
      });
    phases_.run("eval", [&] { loop_->evaluate_if_due(); });
    return stop;
  }
}

Scalars ActorLearner::finish_update() {
  ++version_;
  const int64_t n = builder_.rollouts_in_update();
  rollouts_trained_ += n;
  const std::string p = builder_.metric_prefix() + "/";
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - update_start_).count();
  Scalars s = update_metrics_;
  for (const auto& [k, v] : builder_.finish_update()) s[k] = v;
  s[p + "version"] = static_cast<double>(version_);
  s[p + "rollouts_trained"] = static_cast<double>(rollouts_trained_);
  s[p + "update_seconds"] = secs;
  s[p + "rollouts_per_s"] = static_cast<double>(n) / secs;
  if (s.count(p + "tokens")) s[p + "tokens_per_s"] = s[p + "tokens"] / secs;
  if (status_)
    for (const auto& [k, v] : status_()) s[k] = v;
  return s;
}

// Seconds of the update's phases, the training loop's (batch, forward_backward, gradient_sync,
// optimizer) and the runtime's (publish, eval, wait_rollouts, prepare, checkpoint), as
// "<prefix>/time/<phase>" (a builder may split "prepare" into "<prefix>/time/prepare/<part>");
// "cycle" is the whole time since the last update's end and "other" what no phase accounts for.
void ActorLearner::add_phase_seconds(Scalars& metrics) {
  const std::string p = builder_.metric_prefix() + "/time/";
  const auto now = std::chrono::steady_clock::now();
  const double cycle = std::chrono::duration<double>(now - cycle_start_).count();
  cycle_start_ = now;
  Scalars phases = phases_.take(p);
  for (const auto& [k, v] : loop_->take_phase_seconds(p)) phases[k] += v;
  double accounted = 0;
  for (const auto& [k, v] : phases) {
    metrics[k] = v;
    accounted += v;
  }
  metrics[p + "cycle"] = cycle;
  metrics[p + "other"] = std::max(0.0, cycle - accounted);
}

// The status file from an update's metrics or an evaluation's (whichever is given).
void ActorLearner::write_status(const Scalars& update, const Scalars& eval) {
  if (!loop_->lead()) return;
  auto get = [](const Scalars& m, const std::string& k, double& into) {
    if (auto it = m.find(k); it != m.end()) into = it->second;
  };
  const std::string p = builder_.metric_prefix() + "/";
  RunStatus& s = status_file_;
  s.version = version_;
  s.step = loop_->step();
  s.steps = loop_->steps();
  get(update, p + "score_mean", s.score);
  get(update, p + "kl", s.kl);
  get(update, p + "rollouts_per_s", s.rollouts_per_s);
  get(update, p + "staleness", s.staleness);
  get(update, "replay/trained_share", s.trained_share);
  get(eval, "replay/trained_share", s.trained_share);
  get(eval, "eval/task_reward", s.held_out_reward);
  get(eval, "eval/reward", s.held_out_reward);  // the user's own prompts, when evaluated
  write_run_status(out_dir_, s);
}

}  // namespace keel
