// Held-out evaluation on a user's own prompts (a JSONL file of {prompt} or {messages} lines with
// any other fields): each prompt is answered greedily and `samples` times at the actors'
// temperature, and the responses are scored like the actors' rollouts (by the run's reward
// service, or offline by a scorer in this process), with the prompt line's fields beside them.
//   eval/reward          mean score of the sampled responses
//   eval/greedy_reward   mean score of the greedy responses
//   eval/reward/<tag>    eval/reward over the prompts whose line has that string "tag"
// A reward that cannot be had (the service silent past its timeout, a program that fails) skips
// that evaluation with a message naming why: the run goes on.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "core/tokenizer.h"
#include "core/transformer.h"
#include "wire/messages.h"

namespace keel {

// Scores items in order; throws KeelError when they cannot be scored.
using ScoreFn = std::function<std::vector<float>(const std::vector<wire::ScoreItem>&)>;

struct PromptEvalOptions {
  std::string prompts_file;              // the held-out prompts; a bad line is an error naming file:line
  int samples = 4;                       // sampled responses per prompt
  std::string prompt_template = "auto";  // core/chat_template.h: a preset, or auto (the model's own)
  int64_t batch_size = 32;               // prompts decoded together
  int64_t max_new_tokens = 64;
  uint64_t seed = 7;  // of the sampled responses
  void validate() const;
};

// Every prompt's responses and scores, and the metrics above.
struct PromptEvalResult {
  Scalars metrics;
  std::vector<nlohmann::json> rows;  // per prompt: the line's fields, "greedy", "samples", their scores
};

// Loads the prompts now (a bad file fails at start) and returns the evaluation of a policy.
// `tok` must outlive it.
std::function<PromptEvalResult(Transformer&)> make_prompt_eval(const PromptEvalOptions& o, const Tokenizer& tok,
                                                               double temperature, ScoreFn score);

// The evaluation as a learner runs it: metrics only, and {} (with the reason on stderr) when the
// reward could not be had.
std::function<Scalars(Transformer&)> make_prompt_eval_metrics(const PromptEvalOptions& o, const Tokenizer& tok,
                                                              double temperature, ScoreFn score);

// Scoring through the reward service at `endpoint`, as the actors do; a request unanswered within
// `timeout_ms`, or answered with an error, throws naming it.
ScoreFn reward_service_scores(const std::string& endpoint, const std::string& name, int timeout_ms);

// Scoring by a scorer in this process (reward/scorer.h: task, program or model).
struct ScorerOptions;
ScoreFn local_scores(const ScorerOptions& scorer);

// `keel eval prompts`: a model directory on a prompts file, scored in this process.
struct OfflinePromptEvalOptions {
  std::string model_dir;
  PromptEvalOptions eval;
  double temperature = 1.0;
};
PromptEvalResult run_offline_prompt_eval(const OfflinePromptEvalOptions& o, const ScorerOptions& scorer, torch::Device device);

}  // namespace keel
