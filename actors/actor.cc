#include "actors/actor.h"

#include <sstream>

#include <unistd.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "core/model_loader.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/hash.h"
#include "wire/heartbeat.h"
#include "core/jsonl.h"
#include "core/sft_data.h"
#include "core/tasks.h"
#include "actors/credit_client.h"
#include "wire/weights/receiver.h"
#include "wire/channel.h"

namespace keel {

void ActorOptions::validate() const {
  KEEL_CHECK(!model_dir.empty(), "actor needs --model (the initial policy)");
  KEEL_CHECK(world > 0 && rank >= 0 && rank < world, "actor rank " << rank << " outside world " << world);
  KEEL_CHECK(batch_prompts > 0 && group_size > 0, "batch-prompts and group-size must be positive");
  KEEL_CHECK(reward_retries >= 0 && reward_timeout_ms > 0, "bad reward retry settings");
  sampling.validate();
  KEEL_CHECK(decode_dtype == "float32" || decode_dtype == "bfloat16",
             "--decode-dtype is float32 or bfloat16, got '" << decode_dtype << "'");
  // The learner recomputes log-probs under the full softmax at --temperature (learner/sampling_contract.h).
  KEEL_CHECK(sampling.temperature > 0,
             "an RL actor needs --temperature > 0: greedy samples have no sampling log-probs for the learner's ratio");
  KEEL_CHECK(sampling.top_k == 0 && sampling.top_p >= 1.0, "an RL actor samples from the full softmax: --top-k "
                                                               << sampling.top_k << " / --top-p " << sampling.top_p
                                                               << " truncate it, and the learner would refuse the batches");
}

namespace {

using Clock = std::chrono::steady_clock;

struct Prompt {
  std::string text;             // as given (task prompt), scored by the reward service
  std::vector<int32_t> tokens;  // BOS + templated prompt
  std::string fields;           // the prompt line's own fields for the reward service ("" for built-in tasks)
};

std::vector<Prompt> load_prompts(const ActorOptions& o, const Tokenizer& tok) {
  const auto tmpl = resolve_prompt_template(o.prompt_template, o.model_dir);
  std::vector<PromptRecord> records;
  if (o.prompts == "tasks") {
    const auto fams = parse_task_families(o.task_families);
    for (const auto& t : make_tasks(TaskSplit::kTrain, static_cast<int>(o.tasks_per_family), 11, fams))
      records.push_back({{{"user", t.prompt}}, "", ""});
  } else {
    records = load_prompt_records(o.prompts, BadLinePolicy::kSkip);
  }
  std::vector<Prompt> out;
  for (size_t i = 0; i < records.size(); ++i)
    if (static_cast<int>(i % static_cast<size_t>(o.world)) == o.rank)
      // The reward service sees the conversation without the template (a {prompt} line: its text).
      out.push_back({render_prompt(records[i].conversation, PromptTemplate::kNone),
                     prompt_ids(records[i].conversation, tmpl, tok), records[i].line.empty() ? "" : prompt_fields(records[i])});
  KEEL_CHECK(!out.empty(), "actor " << o.rank << " has no prompts in its shard");
  return out;
}

}  // namespace

namespace {

// One actor process's loop, step by step. Owns its sockets; single-threaded.
class ActorLoop {
 public:
  ActorLoop(const ActorOptions& o, const std::atomic<bool>& stop);
  ActorStats run();

 private:
  // Newest announced weights into the model; `wait`: also for a version still crossing the
  // network in chunks (otherwise it keeps generating with the weights it has meanwhile).
  bool load_newest(bool wait);
  void refresh_weights();                  // between batches: newer weights, or wait (sync)
  std::optional<uint64_t> await_credit();  // the grant's credit id; nullopt on stop
  std::optional<wire::ScoreReply> score(const wire::ScoreRequest& req);
  wire::RolloutBatch make_batch(const std::vector<const Prompt*>& batch, const Samples& samples, const wire::ScoreRequest& req,
                                const wire::ScoreReply& reply, uint64_t seed);
  void push(const wire::RolloutBatch& rb);
  bool one_batch();  // false when the loop must end

  const ActorOptions& o_;
  const std::atomic<bool>& stop_;
  std::string name_;
  std::unique_ptr<Tokenizer> tok_;
  Transformer model_{nullptr};
  std::vector<Prompt> prompts_;
  WeightReceiver weights_;
  wire::HeartbeatSender heartbeat_;
  CreditClient credits_;
  std::unique_ptr<wire::Channel> reward_, push_;
  wire::ReceiveStats rstats_;
  ActorStats st_;
  size_t cursor_ = 0;
  uint64_t request_id_;
};

ActorLoop::ActorLoop(const ActorOptions& o, const std::atomic<bool>& stop)
    : o_(o), stop_(stop), name_("actor-" + std::to_string(o.rank)), weights_(o.weights_endpoint, o.chunks_endpoint, name_),
      heartbeat_(o.rollouts_endpoint, name_, std::chrono::milliseconds(1000)), credits_(o.chunks_endpoint, name_),
      reward_(wire::zmq_connect(wire::SocketKind::kDealer, o.reward_endpoint)),
      push_(wire::zmq_connect(wire::SocketKind::kPush, o.rollouts_endpoint)), request_id_(static_cast<uint64_t>(o.rank) << 40) {
  auto loaded = load_model_dir(o.model_dir, ModelLoadOptions::on(torch::Device(o.device)));
  tok_ = std::move(loaded.tokenizer);
  model_ = loaded.model;
  model_->eval();
  if (o.decode_dtype == "bfloat16") model_->set_decode_dtype(torch::kBFloat16);
  prompts_ = load_prompts(o, *tok_);
  std::mt19937_64 order_rng(o.sampling.seed * 7919ull + static_cast<uint64_t>(o.rank));
  std::shuffle(prompts_.begin(), prompts_.end(), order_rng);
}

bool ActorLoop::load_newest(bool wait) {
  uint64_t v = 0;
  const auto t0 = Clock::now();
  const bool loaded = weights_.load_newest(model_, &v, wait);
  if (loaded && o_.decode_dtype == "bfloat16") model_->set_decode_dtype(torch::kBFloat16);  // copies of the new weights
  st_.seconds_loading_weights += std::chrono::duration<double>(Clock::now() - t0).count();
  if (!loaded) return false;
  st_.version = v;
  heartbeat_.set_version(v);
  ++st_.weight_loads;
  return true;
}

void ActorLoop::refresh_weights() {
  const auto w0 = Clock::now();
  weights_.poll(0);
  if (o_.sync && st_.batches > 0)
    while (!weights_.has_newer(st_.version) && !stop_.load()) weights_.poll(200);
  // A synchronous run generates from the newest version only; an asynchronous one goes on with
  // the version it has while a newer one arrives in chunks.
  if (weights_.has_newer(st_.version)) load_newest(/*wait=*/o_.sync);
  st_.seconds_waiting_for_weights += std::chrono::duration<double>(Clock::now() - w0).count();
}

std::optional<uint64_t> ActorLoop::await_credit() {
  if (!o_.credits) return 0;
  const auto t0 = Clock::now();
  const auto rollouts = static_cast<uint32_t>(o_.batch_prompts * o_.group_size);
  std::optional<uint64_t> credit;
  while (!credit && !stop_.load()) {
    const auto g = credits_.ask(st_.version, rollouts, 1000);
    if (g && g->granted && g->min_version <= st_.version) {
      credit = g->credit_id;
    } else if (g) {
      ++st_.credit_refusals;
      // Refused: wait a little, taking newer weights meanwhile (needed when the grant named a
      // newer version than the one held).
      weights_.poll(static_cast<int>(std::max<uint32_t>(g->retry_ms, 10)));
      if (weights_.has_newer(st_.version)) load_newest(/*wait=*/false);
    }
  }
  st_.seconds_waiting_for_credit += std::chrono::duration<double>(Clock::now() - t0).count();
  return credit;
}

std::optional<wire::ScoreReply> ActorLoop::score(const wire::ScoreRequest& req) {
  std::optional<wire::ScoreReply> reply;
  for (int attempt = 0; attempt <= o_.reward_retries && !reply && !stop_.load(); ++attempt) {
    if (attempt > 0) {
      ++st_.reward_retries;
      std::cerr << name_ << ": no score from the reward service, retry " << attempt << "/" << o_.reward_retries << "\n";
    }
    wire::send_message(*reward_, {name_, req});
    const auto deadline = Clock::now() + std::chrono::milliseconds(o_.reward_timeout_ms);
    while (!reply && Clock::now() < deadline && !stop_.load()) {
      auto m = wire::receive(*reward_, 200, rstats_);
      auto* r = m ? std::get_if<wire::ScoreReply>(&m->body) : nullptr;
      if (!r || r->request_id != req.request_id) continue;
      if (!r->error.empty()) {
        std::cerr << name_ << ": reward service error: " << r->error << "\n";
        break;
      }
      if (r->scores.size() == req.items.size()) reply = *r;
    }
  }
  return reply;
}

wire::RolloutBatch ActorLoop::make_batch(const std::vector<const Prompt*>& batch, const Samples& samples,
                                         const wire::ScoreRequest& req, const wire::ScoreReply& reply, uint64_t seed) {
  wire::RolloutBatch rb;
  rb.temperature = static_cast<float>(o_.sampling.temperature);
  rb.top_k = static_cast<uint32_t>(o_.sampling.top_k);
  rb.top_p = static_cast<float>(o_.sampling.top_p);
  rb.group_size = static_cast<uint32_t>(o_.group_size);
  rb.tokenizer = tok_->identity();
  for (size_t i = 0; i < batch.size(); ++i) {
    wire::Rollout r;
    r.prompt_tokens = batch[i]->tokens;
    r.response_tokens = samples.responses[i];
    r.logprobs = samples.logprobs[i];
    r.policy_version = st_.version;
    r.actor_id = static_cast<uint32_t>(o_.rank);
    r.seed = seed;
    r.score = reply.scores[i];
    if (i < reply.parts.size()) r.score_parts = reply.parts[i];
    r.finished = samples.finished[i];
    r.prompt = req.items[i].prompt;
    r.response = req.items[i].response;
    // Unique over actors and their restarts, like the uid: groups are found by this id.
    const uint64_t group_key[5] = {static_cast<uint64_t>(o_.rank), o_.incarnation, static_cast<uint64_t>(st_.batches),
                                   i / static_cast<size_t>(o_.group_size), 0x67726f7570ull};
    r.group_id = fnv1a64(std::string(reinterpret_cast<const char*>(group_key), sizeof group_key));
    const uint64_t key[4] = {static_cast<uint64_t>(o_.rank), o_.incarnation, static_cast<uint64_t>(st_.batches), i};
    r.uid = fnv1a64(std::string(reinterpret_cast<const char*>(key), sizeof key));
    rb.rollouts.push_back(std::move(r));
  }
  return rb;
}

void ActorLoop::push(const wire::RolloutBatch& rb) {
  const auto bytes = wire::encode({name_, rb});
  while (!push_->send(bytes) && !stop_.load()) {
    ++st_.push_retries;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

bool ActorLoop::one_batch() {
  refresh_weights();
  const auto credit = await_credit();
  if (!credit || stop_.load()) return false;
  std::vector<const Prompt*> batch;
  for (int64_t i = 0; i < o_.batch_prompts; ++i) {
    const Prompt* p = &prompts_[cursor_++ % prompts_.size()];
    for (int64_t g = 0; g < o_.group_size; ++g) batch.push_back(p);
  }
  std::vector<std::vector<int32_t>> ids;
  for (auto* p : batch) ids.push_back(p->tokens);
  SamplingConfig sc = o_.sampling;
  sc.seed = o_.sampling.seed + static_cast<uint64_t>(st_.batches) * static_cast<uint64_t>(o_.world) +
            static_cast<uint64_t>(o_.rank) + o_.incarnation * 0x9E3779B97F4A7C15ull;
  const auto t_sample = Clock::now();
  const auto samples = sample(model_, ids, sc, tok_->specials().eos, tok_->specials().pad);
  st_.seconds_generating += std::chrono::duration<double>(Clock::now() - t_sample).count();
  if (!weights_.unchanged_since_load()) {
    // The parameters were shared memory that the learner rewrote meanwhile: not one version.
    ++st_.discarded_batches;
    while (!load_newest(/*wait=*/true) && !stop_.load()) weights_.poll(200);
    return !stop_.load();
  }
  wire::ScoreRequest req;
  req.request_id = ++request_id_;
  for (size_t i = 0; i < batch.size(); ++i) {
    auto resp = samples.responses[i];
    if (samples.finished[i] && !resp.empty()) resp.pop_back();  // the EOS is not part of the text
    req.items.push_back({batch[i]->text, tok_->decode(resp), batch[i]->tokens, samples.responses[i],
                         static_cast<bool>(samples.finished[i]), batch[i]->fields});
  }
  const auto t_score = Clock::now();
  const auto reply = score(req);
  st_.seconds_scoring += std::chrono::duration<double>(Clock::now() - t_score).count();
  if (stop_.load()) return false;
  KEEL_CHECK(reply, name_ << ": the reward service did not answer after " << o_.reward_retries << " retries");
  auto rb = make_batch(batch, samples, req, *reply, sc.seed);
  rb.credit_id = *credit;
  const auto t_push = Clock::now();
  push(rb);
  st_.seconds_sending += std::chrono::duration<double>(Clock::now() - t_push).count();
  ++st_.batches;
  st_.rollouts += static_cast<int64_t>(rb.rollouts.size());
  return true;
}

ActorStats ActorLoop::run() {
  std::cerr << name_ << ": " << prompts_.size() << " prompts, batch " << o_.batch_prompts << " x " << o_.group_size << "\n";
  const auto started = Clock::now();
  while (!stop_.load() && (o_.max_batches == 0 || st_.batches < o_.max_batches))
    if (!one_batch()) break;
  st_.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return st_;
}

}  // namespace

ActorStats run_actor(const ActorOptions& o, const std::atomic<bool>& stop) {
  o.validate();
  ActorLoop loop(o, stop);
  return loop.run();
}

std::string describe_actor_stats(const ActorStats& st, int rank) {
  std::ostringstream os;
  os << "actor " << rank << ": " << st.batches << " batches, " << st.rollouts << " rollouts, " << st.weight_loads
     << " weight loads, version " << st.version << ", " << st.seconds_waiting_for_weights << " s of " << st.seconds
     << " s waiting for weights, " << st.seconds_waiting_for_credit << " s waiting for credit (" << st.credit_refusals
     << " refusals), " << st.discarded_batches << " batches discarded; " << st.seconds_generating << " s generating, "
     << st.seconds_scoring << " s scoring, " << st.seconds_loading_weights << " s loading weights, " << st.seconds_sending
     << " s sending";
  return os.str();
}

}  // namespace keel
