#include "actors/task_eval.h"

#include "actors/sampler.h"

#include <cmath>

namespace keel {

namespace {

// One response per task (decoded, EOS dropped), draw `draw` of the sampling seeded by `seed`.
std::vector<std::string> task_responses(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                                        PromptTemplate tmpl, int64_t batch_size, SamplingConfig cfg, uint64_t seed, int draw) {
  std::vector<std::string> out;
  for (size_t i = 0; i < tasks.size(); i += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(tasks.size(), i + static_cast<size_t>(batch_size));
    std::vector<std::vector<int32_t>> prompts;
    for (size_t j = i; j < end; ++j) prompts.push_back(make_sft_example(render_prompt(tasks[j].prompt, tmpl), "", tok).prompt);
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
  for (int d = 0; d < draws; ++d) {
    const auto responses = task_responses(model, tok, tasks, tmpl, batch_size, cfg, seed, d);
    for (size_t j = 0; j < tasks.size(); ++j) {
      const std::string fam = task_family_name(tasks[j].family);
      r.count[fam]++;
      correct[fam] += check_task(tasks[j].prompt, responses[j]) ? 1 : 0;
    }
  }
  double sum = 0;
  for (const auto& [fam, n] : r.count) {
    r.accuracy[fam] = static_cast<double>(correct[fam]) / static_cast<double>(n);
    sum += r.accuracy[fam];
  }
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
    const auto ex = make_sft_example(render_prompt(t.prompt, tmpl), t.answer, tok);
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

}  // namespace keel
