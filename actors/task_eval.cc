#include "actors/task_eval.h"

#include <cmath>
#include <cstdio>

#include "actors/sampler.h"
#include "core/error.h"
#include "core/model_loader.h"

namespace keel {

namespace {

// One response per task (decoded, EOS dropped), draw `draw` of the sampling seeded by `seed`.
std::vector<std::string> task_responses(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                                        PromptTemplate tmpl, int64_t batch_size, SamplingConfig cfg, uint64_t seed, int draw) {
  std::vector<std::string> out;
  for (size_t i = 0; i < tasks.size(); i += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(tasks.size(), i + static_cast<size_t>(batch_size));
    std::vector<std::vector<int32_t>> prompts;
    for (size_t j = i; j < end; ++j) prompts.push_back(prompt_ids({{"user", tasks[j].prompt}}, tmpl, tok));
    cfg.seed = seed + static_cast<uint64_t>(draw) * 1000003ull + i;
    auto s = sample(model, prompts, cfg, tok.specials().eos, tok.specials().pad);
    for (size_t j = i; j < end; ++j) out.push_back(tok.decode(s.responses[j - i]));
  }
  return out;
}

}  // namespace

std::vector<std::string> sample_wrong_answers(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                                              PromptTemplate tmpl, int samples, double temperature, uint64_t seed,
                                              int64_t batch_size, int64_t max_new_tokens) {
  SamplingConfig cfg;
  cfg.temperature = temperature;
  cfg.max_new_tokens = max_new_tokens;
  std::vector<std::string> wrong(tasks.size());
  for (int d = 0; d < samples; ++d) {
    const auto responses = task_responses(model, tok, tasks, tmpl, batch_size, cfg, seed, d);
    for (size_t j = 0; j < tasks.size(); ++j) {
      std::string r = responses[j];
      r.erase(0, r.find_first_not_of(" \t\n"));
      r.erase(r.find_last_not_of(" \t\n") + 1);
      if (wrong[j].empty() && !r.empty() && !check_task(tasks[j].prompt, r)) wrong[j] = r;
    }
  }
  return wrong;
}

TaskEvalResult evaluate_tasks(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                              PromptTemplate tmpl, int64_t batch_size, int64_t max_new_tokens, double temperature, int samples,
                              uint64_t seed) {
  TaskEvalResult r;
  std::map<std::string, int64_t> correct;
  SamplingConfig cfg;
  cfg.temperature = temperature;
  cfg.max_new_tokens = max_new_tokens;
  const int draws = temperature > 0 ? std::max(1, samples) : 1;
  std::vector<bool> solved(tasks.size(), false);
  for (int d = 0; d < draws; ++d) {
    const auto responses = task_responses(model, tok, tasks, tmpl, batch_size, cfg, seed, d);
    for (size_t j = 0; j < tasks.size(); ++j) {
      const std::string fam = task_family_name(tasks[j].family);
      r.count[fam]++;
      const bool right = check_task(tasks[j].prompt, responses[j]);
      correct[fam] += right ? 1 : 0;
      solved[j] = solved[j] || right;
    }
  }
  std::map<std::string, int64_t> solved_in_family, tasks_in_family;
  for (size_t j = 0; j < tasks.size(); ++j) {
    const std::string fam = task_family_name(tasks[j].family);
    tasks_in_family[fam]++;
    solved_in_family[fam] += solved[j] ? 1 : 0;
  }
  double sum = 0;
  for (const auto& [fam, n] : r.count) {
    r.accuracy[fam] = static_cast<double>(correct[fam]) / static_cast<double>(n);
    r.pass_at_k[fam] = static_cast<double>(solved_in_family[fam]) / static_cast<double>(tasks_in_family[fam]);
    sum += r.accuracy[fam];
  }
  r.k = draws;
  r.mean_accuracy = r.count.empty() ? 0 : sum / static_cast<double>(r.count.size());
  return r;
}

TaskEvalResult expected_task_reward(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                                    PromptTemplate tmpl, double temperature) {
  TORCH_CHECK(temperature > 0, "expected reward needs a sampling temperature > 0");
  torch::NoGradGuard ng;
  TaskEvalResult r;
  std::map<std::string, double> total;
  for (const auto& t : tasks) {
    const auto ex = make_chat_example({{"user", t.prompt}}, t.answer, tmpl, tok);
    std::vector<int64_t> ids(ex.prompt.begin(), ex.prompt.end());
    ids.insert(ids.end(), ex.response.begin(), ex.response.end());
    const auto P = static_cast<int64_t>(ex.prompt.size()), R = static_cast<int64_t>(ex.response.size());
    auto x = torch::tensor(ids, torch::kLong).unsqueeze(0).to(model->device());
    auto logits = model->logits(model->hidden({x, {}, {}, {}}).narrow(1, P - 1, R));
    const double logp = token_logprobs(logits, x.narrow(1, P, R), temperature).sum().item<double>();
    const std::string fam = task_family_name(t.family);
    r.count[fam]++;
    total[fam] += std::exp(logp);
  }
  double sum = 0;
  for (const auto& [fam, n] : r.count) {
    r.accuracy[fam] = total[fam] / static_cast<double>(n);
    sum += r.accuracy[fam];
  }
  r.mean_accuracy = r.count.empty() ? 0 : sum / static_cast<double>(r.count.size());
  return r;
}

TaskEvalResult run_task_eval(const TaskEvalRunOptions& o, torch::Device device) {
  KEEL_CHECK(o.temperature >= 0, "--temperature must be >= 0, got " << o.temperature);
  KEEL_CHECK(o.samples >= 1, "--samples must be >= 1, got " << o.samples);
  KEEL_CHECK(o.split == "train" || o.split == "held-out", "--split must be train or held-out, got '" << o.split << "'");
  auto [model, tok_file, tok] = load_model_dir(o.model_dir, ModelLoadOptions::on(device));
  const auto split = o.split == "train" ? TaskSplit::kTrain : TaskSplit::kHeldOut;
  const auto tasks = make_tasks(split, o.per_family, o.seed, parse_task_families(o.families));
  const bool sampled = o.temperature > 0;
  return evaluate_tasks(model, *tok, tasks, resolve_prompt_template(o.prompt_template, o.model_dir), 32, 24, o.temperature,
                        sampled ? o.samples : 1, o.seed + 6);
}

void print_task_eval(const TaskEvalResult& r, std::ostream& table) {
  char line[96];
  for (const auto& [fam, acc] : r.accuracy) {
    std::snprintf(line, sizeof line, "%-12s %6.3f  (%lld tasks)\n", fam.c_str(), acc, static_cast<long long>(r.count.at(fam)));
    table << line;
  }
  std::snprintf(line, sizeof line, "%-12s %6.3f\n", "mean", r.mean_accuracy);
  table << line;
  if (r.k > 1)
    for (const auto& [fam, p] : r.pass_at_k) {
      std::snprintf(line, sizeof line, "%-12s pass@%d %6.3f\n", fam.c_str(), r.k, p);
      table << line;
    }
}

nlohmann::json task_eval_json(const TaskEvalResult& r, const TaskEvalRunOptions& o) {
  nlohmann::json j;
  for (const auto& [fam, acc] : r.accuracy) j["accuracy"][fam] = acc;
  j["mean_accuracy"] = r.mean_accuracy;
  if (r.k > 1) {
    j["k"] = r.k;
    for (const auto& [fam, p] : r.pass_at_k) j["pass_at_k"][fam] = p;
  }
  j["model"] = o.model_dir;
  j["temperature"] = o.temperature;
  j["samples"] = o.temperature > 0 ? o.samples : 1;
  return j;
}

}  // namespace keel
