#include "actors/heldout_eval.h"

#include "actors/task_eval.h"
#include "core/error.h"
#include "core/tasks.h"

namespace keel {

void HeldOutEvalOptions::validate() const {
  KEEL_CHECK(per_family > 0, "eval-per-family must be positive");
  KEEL_CHECK(samples > 0, "eval-samples must be positive");
  KEEL_CHECK(batch_size > 0 && max_new_tokens > 0, "eval batch size and max new tokens must be positive");
}

std::function<Scalars(Transformer&)> make_heldout_task_eval(const HeldOutEvalOptions& o, const Tokenizer& tok,
                                                            double temperature) {
  o.validate();
  const auto fams = parse_task_families(o.families);
  auto held = make_tasks(TaskSplit::kHeldOut, o.per_family, 1, fams);
  const auto t = parse_prompt_template(o.prompt_template);
  return [held, t, o, temperature, &tok](Transformer& m) {
    auto sampled = evaluate_tasks(m, tok, held, t, o.batch_size, o.max_new_tokens, temperature, o.samples, o.seed);
    auto greedy = evaluate_tasks(m, tok, held, t, o.batch_size, o.max_new_tokens);
    auto expected = expected_task_reward(m, tok, held, t, temperature > 0 ? temperature : 1.0);
    Scalars s{{"eval/task_reward", sampled.mean_accuracy},
              {"eval/greedy_accuracy", greedy.mean_accuracy},
              {"eval/expected_reward", expected.mean_accuracy}};
    for (const auto& [fam, acc] : greedy.accuracy) s["eval/accuracy/" + fam] = acc;
    return s;
  };
}

}  // namespace keel
