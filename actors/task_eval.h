// A model on the built-in task families: exact-match accuracy (greedy or sampled), and its own
// wrong answers (on-policy negatives for preference pairs).
#pragma once

#include <map>
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
};

// Responses (up to max_new_tokens) to `tasks`, checked with check_task(): greedy when
// temperature is 0, else `samples` draws per task at that temperature (seeded), so that accuracy
// is the policy's expected reward under the distribution PPO trains.
TaskEvalResult evaluate_tasks(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                              PromptTemplate tmpl, int64_t batch_size = 32, int64_t max_new_tokens = 24,
                              double temperature = 0.0, int samples = 1, uint64_t seed = 1);

// For each task, the first of `samples` responses drawn at `temperature` that check_task() rejects;
// "" where every draw was right.
std::vector<std::string> sample_wrong_answers(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                                              PromptTemplate tmpl, int samples, double temperature, uint64_t seed,
                                              int64_t batch_size = 32, int64_t max_new_tokens = 24);

}  // namespace keel
