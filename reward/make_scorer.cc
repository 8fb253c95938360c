#include "core/error.h"
#include "reward/scorer.h"

namespace keel {

void ScorerOptions::validate() const {
  KEEL_CHECK(kind == "task" || kind == "program" || kind == "model",
             "unknown reward kind '" << kind << "' (task, program, model)");
  KEEL_CHECK(kind != "program" || !program.empty(), "--kind program needs --program");
  KEEL_CHECK(kind != "program" || program_timeout_ms > 0, "--program-timeout-ms must be positive");
  KEEL_CHECK(kind != "model" || !model.empty(), "--kind model needs --model");
}

std::unique_ptr<Scorer> make_scorer(const ScorerOptions& o) {
  o.validate();
  if (o.kind == "task") return make_task_scorer();
  if (o.kind == "program") return make_program_scorer(o.program, o.program_timeout_ms);
  return make_model_scorer(o.model, o.device);
}

}  // namespace keel
