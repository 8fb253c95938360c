// Held-out evaluation of a policy during an actor-learner run, on the built-in task families:
//   eval/task_reward       exact match of `samples` responses per prompt sampled at the actors' temperature
//   eval/expected_reward   the exact probability of the right answer at that temperature (no sampling noise)
//   eval/greedy_accuracy   greedy exact match, and eval/accuracy/<family> per family
// Every parameter is a named field; the learner composition (learner/rl_learner.h) binds them.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/metrics.h"
#include "core/tokenizer.h"
#include "core/transformer.h"

namespace keel {

struct HeldOutEvalOptions {
  int per_family = 50;                // held-out tasks per family
  int samples = 4;                    // sampled responses per task
  std::vector<std::string> families;  // task families (empty = all)
  std::string prompt_template = "auto";  // core/chat_template.h: a preset, or auto (the model's own)
  int64_t batch_size = 32;  // prompts decoded together
  int64_t max_new_tokens = 24;
  uint64_t seed = 7;  // of the sampled responses
  void validate() const;
};

// The evaluation as a function of the policy. `tok` must outlive it.
std::function<Scalars(Transformer&)> make_heldout_task_eval(const HeldOutEvalOptions& o, const Tokenizer& tok,
                                                            double temperature);

}  // namespace keel
