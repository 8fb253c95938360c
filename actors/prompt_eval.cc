#include "actors/prompt_eval.h"

#include <chrono>
#include <iostream>
#include <memory>
#include <optional>

#include "actors/sampler.h"
#include "core/error.h"
#include "core/model_loader.h"
#include "core/sft_data.h"
#include "reward/scorer.h"
#include "wire/channel.h"

namespace keel {

void PromptEvalOptions::validate() const {
  KEEL_CHECK(!prompts_file.empty(), "the prompt evaluation needs a prompts file (--eval-prompts)");
  KEEL_CHECK(samples > 0, "eval-samples must be positive, not " << samples);
  KEEL_CHECK(batch_size > 0 && max_new_tokens > 0, "eval batch size and max new tokens must be positive");
}

namespace {

struct EvalPrompt {
  std::string text;             // without the template: what the reward service sees
  std::vector<int32_t> tokens;  // BOS + templated prompt
  std::string fields, tag;
  nlohmann::json line;
};

std::vector<EvalPrompt> load_eval_prompts(const PromptEvalOptions& o, const Tokenizer& tok) {
  const auto tmpl = parse_prompt_template(o.prompt_template);
  std::vector<EvalPrompt> out;
  for (const auto& r : load_prompt_records(o.prompts_file, BadLinePolicy::kFail))
    out.push_back({render_prompt(r.conversation, PromptTemplate::kNone), prompt_ids(r.conversation, tmpl, tok), prompt_fields(r),
                   r.tag, nlohmann::json::parse(r.line)});
  return out;
}

// Draw `draw` of every prompt (temperature 0: the greedy response), decoded and scored.
std::vector<std::pair<std::string, float>> answer(Transformer& model, const Tokenizer& tok,
                                                  const std::vector<EvalPrompt>& prompts, const PromptEvalOptions& o,
                                                  double temperature, int draw, const ScoreFn& score) {
  std::vector<std::pair<std::string, float>> out;
  SamplingConfig cfg;
  cfg.temperature = temperature;
  cfg.max_new_tokens = o.max_new_tokens;
  for (size_t i = 0; i < prompts.size(); i += static_cast<size_t>(o.batch_size)) {
    const size_t end = std::min(prompts.size(), i + static_cast<size_t>(o.batch_size));
    std::vector<std::vector<int32_t>> ids;
    for (size_t j = i; j < end; ++j) ids.push_back(prompts[j].tokens);
    cfg.seed = o.seed + static_cast<uint64_t>(draw) * 1000003ull + i;
    const auto s = sample(model, ids, cfg, tok.specials().eos, tok.specials().pad);
    std::vector<wire::ScoreItem> items;
    for (size_t j = i; j < end; ++j) {
      auto resp = s.responses[j - i];
      const bool finished = s.finished[j - i];
      if (finished && !resp.empty()) resp.pop_back();  // the EOS is not part of the text
      items.push_back({prompts[j].text, tok.decode(resp), prompts[j].tokens, s.responses[j - i], finished, prompts[j].fields});
    }
    const auto scores = score(items);
    KEEL_CHECK_KIND(ErrorKind::kPeer, scores.size() == items.size(),
                    "the reward gave " << scores.size() << " scores for " << items.size() << " responses");
    for (size_t k = 0; k < items.size(); ++k) out.emplace_back(items[k].response, scores[k]);
  }
  return out;
}

PromptEvalResult evaluate(Transformer& model, const Tokenizer& tok, const std::vector<EvalPrompt>& prompts,
                          const PromptEvalOptions& o, double temperature, const ScoreFn& score) {
  torch::NoGradGuard ng;
  PromptEvalResult r;
  const auto greedy = answer(model, tok, prompts, o, 0.0, 0, score);
  std::vector<std::vector<std::pair<std::string, float>>> draws;
  for (int d = 0; d < o.samples; ++d) draws.push_back(answer(model, tok, prompts, o, temperature, d + 1, score));
  double sampled_sum = 0, greedy_sum = 0;
  std::map<std::string, std::pair<double, int64_t>> by_tag;  // sum, count
  for (size_t i = 0; i < prompts.size(); ++i) {
    nlohmann::json row = prompts[i].line;
    row["greedy"] = {{"response", greedy[i].first}, {"score", greedy[i].second}};
    greedy_sum += greedy[i].second;
    for (const auto& d : draws) {
      row["samples"].push_back({{"response", d[i].first}, {"score", d[i].second}});
      sampled_sum += d[i].second;
      if (!prompts[i].tag.empty()) {
        by_tag[prompts[i].tag].first += d[i].second;
        by_tag[prompts[i].tag].second += 1;
      }
    }
    r.rows.push_back(std::move(row));
  }
  const double n = static_cast<double>(prompts.size());
  r.metrics["eval/reward"] = sampled_sum / (n * o.samples);
  r.metrics["eval/greedy_reward"] = greedy_sum / n;
  for (const auto& [tag, sc] : by_tag) r.metrics["eval/reward/" + tag] = sc.first / static_cast<double>(sc.second);
  return r;
}

}  // namespace

std::function<PromptEvalResult(Transformer&)> make_prompt_eval(const PromptEvalOptions& o, const Tokenizer& tok,
                                                               double temperature, ScoreFn score) {
  o.validate();
  KEEL_CHECK(temperature > 0, "the prompt evaluation samples at the actors' temperature, which must be > 0");
  auto prompts = std::make_shared<const std::vector<EvalPrompt>>(load_eval_prompts(o, tok));
  return [prompts, o, temperature, score, &tok](Transformer& m) { return evaluate(m, tok, *prompts, o, temperature, score); };
}

std::function<Scalars(Transformer&)> make_prompt_eval_metrics(const PromptEvalOptions& o, const Tokenizer& tok,
                                                              double temperature, ScoreFn score) {
  auto eval = make_prompt_eval(o, tok, temperature, std::move(score));
  return [eval](Transformer& m) -> Scalars {
    try {
      return eval(m).metrics;
    } catch (const KeelError& e) {
      if (e.kind() != ErrorKind::kPeer) throw;
      std::cerr << "eval: skipped the prompt evaluation: " << e.what() << "\n";
      return {};
    }
  };
}

ScoreFn reward_service_scores(const std::string& endpoint, const std::string& name, int timeout_ms) {
  struct Client {
    std::unique_ptr<wire::Channel> socket;
    wire::ReceiveStats stats;
    uint64_t next_id = 1;
  };
  auto c = std::make_shared<Client>();
  c->socket = wire::zmq_connect(wire::SocketKind::kDealer, endpoint);
  return [c, name, timeout_ms, endpoint](const std::vector<wire::ScoreItem>& items) {
    wire::ScoreRequest req;
    req.request_id = c->next_id++;
    req.items = items;
    std::optional<std::vector<float>> scores;
    try {
      KEEL_CHECK_KIND(ErrorKind::kPeer, wire::send_message(*c->socket, {name, req}),
                      "the reward service at " << endpoint << " is not connected");
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
      while (!scores && std::chrono::steady_clock::now() < deadline) {
        auto m = wire::receive(*c->socket, 200, c->stats);
        auto* r = m ? std::get_if<wire::ScoreReply>(&m->body) : nullptr;
        if (!r || r->request_id != req.request_id) continue;  // a late answer to an earlier request
        KEEL_CHECK_KIND(ErrorKind::kPeer, r->error.empty(), "the reward service could not score: " << r->error);
        scores = r->scores;
      }
    } catch (const KeelError&) {
      throw;
    } catch (const std::exception& e) {  // the socket itself (ZeroMQ): the peer's side of the evaluation
      KEEL_FAIL_KIND(ErrorKind::kPeer, "talking to the reward service at " << endpoint << ": " << e.what());
    }
    KEEL_CHECK_KIND(ErrorKind::kPeer, scores,
                    "the reward service at " << endpoint << " did not answer within " << timeout_ms << " ms");
    return *scores;
  };
}

ScoreFn local_scores(const ScorerOptions& scorer) {
  std::shared_ptr<Scorer> s = make_scorer(scorer);
  return [s](const std::vector<wire::ScoreItem>& items) {
    std::vector<float> out;
    for (const auto& r : s->score(items)) out.push_back(r.score);
    return out;
  };
}

PromptEvalResult run_offline_prompt_eval(const OfflinePromptEvalOptions& o, const ScorerOptions& scorer, torch::Device device) {
  auto loaded = load_model_dir(o.model_dir, ModelLoadOptions::on(device));
  loaded.model->eval();
  PromptEvalOptions eval = o.eval;
  eval.prompt_template = prompt_template_name(resolve_prompt_template(eval.prompt_template, o.model_dir));
  return make_prompt_eval(eval, *loaded.tokenizer, o.temperature, local_scores(scorer))(loaded.model);
}

}  // namespace keel
