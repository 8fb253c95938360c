// A model on the built-in task families: exact-match accuracy (greedy or sampled), and its own
// wrong answers (on-policy negatives for preference pairs).
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "core/sft_data.h"
#include "core/tasks.h"
#include "core/tokenizer.h"
#include "core/transformer.h"

namespace keel {

struct TaskEvalResult {
  std::map<std::string, double> accuracy;  // family name -> exact-match accuracy
  std::map<std::string, int64_t> count;
  double mean_accuracy = 0;
  int k = 1;                                // draws per task
  std::map<std::string, double> pass_at_k;  // family -> share of tasks with a right answer among the k draws
};

// Responses (up to max_new_tokens) to `tasks`, checked with check_task(): greedy when
// temperature is 0, else `samples` draws per task at that temperature (seeded), so that accuracy
// is the policy's expected reward under the distribution PPO trains.
TaskEvalResult evaluate_tasks(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                              PromptTemplate tmpl, int64_t batch_size = 32, int64_t max_new_tokens = 24, double temperature = 0.0,
                              int samples = 1, uint64_t seed = 1);

// The policy's exact expected reward on `tasks` when sampling at `temperature` (> 0): per family,
// the mean probability of sampling the reference answer's tokens and then EOS. It has no sampling
// noise, so small changes show; it is a lower bound on the sampled exact-match rate (another token
// sequence that spells a right answer would also count there).
TaskEvalResult expected_task_reward(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                                    PromptTemplate tmpl, double temperature);

// For each task, the first of `samples` responses drawn at `temperature` that check_task() rejects;
// "" where every draw was right.
std::vector<std::string> sample_wrong_answers(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                                              PromptTemplate tmpl, int samples, double temperature, uint64_t seed,
                                              int64_t batch_size = 32, int64_t max_new_tokens = 24);

// `keel eval tasks`: a model directory on built-in tasks, greedy or sampled.
struct TaskEvalRunOptions {
  std::string model_dir;
  std::string split = "held-out";  // train | held-out
  std::string prompt_template = "auto";  // core/chat_template.h: a preset, or auto (the model's own)
  int per_family = 100;
  std::vector<std::string> families;  // none: all
  uint64_t seed = 1;                  // the tasks' seed; sampling uses seed + 6
  double temperature = 0;             // 0: greedy
  int samples = 4;                    // draws per task when temperature > 0
};
TaskEvalResult run_task_eval(const TaskEvalRunOptions& o, torch::Device device);
// The result as a table (one family per line, then the mean) on `table`, and as JSON.
void print_task_eval(const TaskEvalResult& r, std::ostream& table);
nlohmann::json task_eval_json(const TaskEvalResult& r, const TaskEvalRunOptions& o);

}  // namespace keel
