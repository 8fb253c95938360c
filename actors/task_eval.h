// Held-out exact-match accuracy of a model on the built-in task families (greedy decoding).
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

// Greedy responses (up to max_new_tokens) to `tasks`, checked with check_task().
TaskEvalResult evaluate_tasks(Transformer& model, const Tokenizer& tok, const std::vector<TaskExample>& tasks,
                              PromptTemplate tmpl, int64_t batch_size = 32, int64_t max_new_tokens = 24);

}  // namespace keel
