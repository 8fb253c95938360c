#include "actors/actor.h"

#include <unistd.h>

#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/hash.h"
#include "wire/heartbeat.h"
#include "core/jsonl.h"
#include "core/sft_data.h"
#include "core/tasks.h"
#include "actors/weight_receiver.h"
#include "wire/channel.h"

namespace keel {

void ActorOptions::validate() const {
  KEEL_CHECK(!model_dir.empty(), "actor needs --model (the initial policy)");
  KEEL_CHECK(world > 0 && rank >= 0 && rank < world, "actor rank " << rank << " outside world " << world);
  KEEL_CHECK(batch_prompts > 0 && group_size > 0, "batch-prompts and group-size must be positive");
  KEEL_CHECK(reward_retries >= 0 && reward_timeout_ms > 0, "bad reward retry settings");
  sampling.validate();
}

namespace {

using Clock = std::chrono::steady_clock;

struct Prompt {
  std::string text;             // as given (task prompt), scored by the reward service
  std::vector<int32_t> tokens;  // BOS + templated prompt
};

std::vector<Prompt> load_prompts(const ActorOptions& o, const Tokenizer& tok) {
  const auto tmpl = parse_prompt_template(o.prompt_template);
  std::vector<std::string> texts;
  if (o.prompts == "tasks") {
    std::vector<TaskFamily> fams;
    for (const auto& f : o.task_families) fams.push_back(parse_task_family(f));
    if (fams.empty()) fams.assign(std::begin(kAllTaskFamilies), std::end(kAllTaskFamilies));
    for (const auto& t : make_tasks(TaskSplit::kTrain, static_cast<int>(o.tasks_per_family), 11, fams)) texts.push_back(t.prompt);
  } else {
    read_jsonl(o.prompts, BadLinePolicy::kSkip, [&](const nlohmann::json& j) {
      KEEL_CHECK(j.is_object() && j.contains("prompt") && j["prompt"].is_string(), "missing string field 'prompt'");
      texts.push_back(j["prompt"].get<std::string>());
    });
  }
  std::vector<Prompt> out;
  for (size_t i = 0; i < texts.size(); ++i)
    if (static_cast<int>(i % static_cast<size_t>(o.world)) == o.rank)
      out.push_back({texts[i], make_sft_example(render_prompt(texts[i], tmpl), "", tok).prompt});
  KEEL_CHECK(!out.empty(), "actor " << o.rank << " has no prompts in its shard");
  return out;
}

}  // namespace

ActorStats run_actor(const ActorOptions& o, const std::atomic<bool>& stop) {
  o.validate();
  const std::string name = "actor-" + std::to_string(o.rank);
  const auto tok_file = model_tokenizer_file(o.model_dir);
  KEEL_CHECK(!tok_file.empty(), o.model_dir << " holds no tokenizer");
  auto tok = load_tokenizer(tok_file);
  auto model = load_model(o.model_dir, /*allow_new_heads=*/true);
  const torch::Device dev(o.device);
  model->to(dev);
  model->eval();
  auto prompts = load_prompts(o, *tok);
  std::mt19937_64 order_rng(o.sampling.seed * 7919ull + static_cast<uint64_t>(o.rank));
  std::shuffle(prompts.begin(), prompts.end(), order_rng);

  WeightReceiver weights(o.weights_endpoint, o.chunks_endpoint, name);
  wire::HeartbeatSender heartbeat(o.rollouts_endpoint, name, std::chrono::milliseconds(1000));
  auto reward = wire::zmq_connect(wire::SocketKind::kDealer, o.reward_endpoint);
  auto push = wire::zmq_connect(wire::SocketKind::kPush, o.rollouts_endpoint);
  wire::ReceiveStats rstats;
  ActorStats st;
  size_t cursor = 0;
  uint64_t request_id = static_cast<uint64_t>(o.rank) << 40;
  std::cerr << name << ": " << prompts.size() << " prompts, batch " << o.batch_prompts << " x " << o.group_size << "\n";

  const auto started = Clock::now();
  while (!stop.load() && (o.max_batches == 0 || st.batches < o.max_batches)) {
    // New weights, between batches only.
    const auto w0 = Clock::now();
    weights.poll(0);
    if (o.sync && st.batches > 0) {
      while (!weights.has_newer(st.version) && !stop.load()) weights.poll(200);
    }
    if (weights.has_newer(st.version)) {
      uint64_t v = 0;
      if (weights.load_newest(model, &v)) {
        st.version = v;
        heartbeat.set_version(st.version);
        ++st.weight_loads;
      }
    }
    st.seconds_waiting_for_weights += std::chrono::duration<double>(Clock::now() - w0).count();
    if (stop.load()) break;

    // Generate.
    std::vector<const Prompt*> batch;
    for (int64_t i = 0; i < o.batch_prompts; ++i) {
      const Prompt* p = &prompts[cursor++ % prompts.size()];
      for (int64_t g = 0; g < o.group_size; ++g) batch.push_back(p);
    }
    std::vector<std::vector<int32_t>> ids;
    for (auto* p : batch) ids.push_back(p->tokens);
    SamplingConfig sc = o.sampling;
    sc.seed = o.sampling.seed + static_cast<uint64_t>(st.batches) * static_cast<uint64_t>(o.world) + static_cast<uint64_t>(o.rank) +
              o.incarnation * 0x9E3779B97F4A7C15ull;
    const auto samples = sample(model, ids, sc, tok->specials().eos, tok->specials().pad);
    if (!weights.unchanged_since_load()) {
      // The parameters were shared memory that the learner rewrote meanwhile: not one version.
      ++st.discarded_batches;
      uint64_t v = 0;
      while (!weights.load_newest(model, &v) && !stop.load()) weights.poll(200);
      if (stop.load()) break;
      st.version = v;
      heartbeat.set_version(st.version);
      ++st.weight_loads;
      continue;
    }

    // Score, retrying while the reward service is away.
    wire::ScoreRequest req;
    req.request_id = ++request_id;
    for (size_t i = 0; i < batch.size(); ++i) {
      auto resp = samples.responses[i];
      if (samples.finished[i] && !resp.empty()) resp.pop_back();  // the EOS is not part of the text
      req.items.push_back({batch[i]->text, tok->decode(resp), batch[i]->tokens, samples.responses[i], static_cast<bool>(samples.finished[i])});
    }
    std::optional<wire::ScoreReply> reply;
    for (int attempt = 0; attempt <= o.reward_retries && !reply && !stop.load(); ++attempt) {
      if (attempt > 0) {
        ++st.reward_retries;
        std::cerr << name << ": no score from the reward service, retry " << attempt << "/" << o.reward_retries << "\n";
      }
      wire::send_message(*reward, {name, req});
      const auto deadline = Clock::now() + std::chrono::milliseconds(o.reward_timeout_ms);
      while (!reply && Clock::now() < deadline && !stop.load()) {
        if (auto m = wire::receive(*reward, 200, rstats))
          if (auto* r = std::get_if<wire::ScoreReply>(&m->body))
            if (r->request_id == req.request_id) {
              if (!r->error.empty()) {
                std::cerr << name << ": reward service error: " << r->error << "\n";
                break;
              }
              if (r->scores.size() == req.items.size()) reply = *r;
            }
      }
    }
    if (stop.load()) break;
    KEEL_CHECK(reply, name << ": the reward service did not answer after " << o.reward_retries << " retries");

    wire::RolloutBatch rb;
    rb.temperature = static_cast<float>(o.sampling.temperature);
    for (size_t i = 0; i < batch.size(); ++i) {
      wire::Rollout r;
      r.prompt_tokens = batch[i]->tokens;
      r.response_tokens = samples.responses[i];
      r.logprobs = samples.logprobs[i];
      r.policy_version = st.version;
      r.actor_id = static_cast<uint32_t>(o.rank);
      r.seed = sc.seed;
      r.score = reply->scores[i];
      if (i < reply->parts.size()) r.score_parts = reply->parts[i];
      r.finished = samples.finished[i];
      r.prompt = req.items[i].prompt;
      r.response = req.items[i].response;
      r.group_id = (static_cast<uint64_t>(o.rank) << 48) | (static_cast<uint64_t>(st.batches) << 16) | (i / static_cast<size_t>(o.group_size));
      const uint64_t key[4] = {static_cast<uint64_t>(o.rank), o.incarnation, static_cast<uint64_t>(st.batches), i};
      r.uid = fnv1a64(std::string(reinterpret_cast<const char*>(key), sizeof key));
      rb.rollouts.push_back(std::move(r));
    }
    const auto bytes = wire::encode({name, rb});
    while (!push->send(bytes) && !stop.load()) {
      ++st.push_retries;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ++st.batches;
    st.rollouts += static_cast<int64_t>(rb.rollouts.size());
  }
  st.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return st;
}

}  // namespace keel
