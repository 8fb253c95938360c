#include "core/error.h"
#include "reward/scorer.h"

namespace keel {

std::unique_ptr<Scorer> make_scorer(const ScorerOptions& o) {
  if (o.kind == "task") return make_task_scorer();
  if (o.kind == "program") {
    KEEL_CHECK(!o.program.empty(), "--kind program needs --program");
    KEEL_CHECK(o.program_timeout_ms > 0, "--program-timeout-ms must be positive");
    return make_program_scorer(o.program, o.program_timeout_ms);
  }
  if (o.kind == "model") {
    KEEL_CHECK(!o.model.empty(), "--kind model needs --model");
    return make_model_scorer(o.model, o.device);
  }
  KEEL_FAIL("unknown reward kind '" << o.kind << "' (task, program, model)");
}

}  // namespace keel
