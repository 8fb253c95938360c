#include "actors/task_export.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "actors/task_eval.h"
#include "core/error.h"
#include "core/model_loader.h"
#include "core/tasks.h"

namespace keel {

namespace {

TaskSplit parse_split(const std::string& s) {
  KEEL_CHECK(s == "train" || s == "held-out", "--split must be train or held-out, got '" << s << "'");
  return s == "train" ? TaskSplit::kTrain : TaskSplit::kHeldOut;
}

// The model's own wrong answer per task ("" where every draw was right).
std::vector<std::string> sampled_wrong_answers(const TaskExportOptions& o, torch::Device device,
                                               const std::vector<TaskExample>& tasks, std::ostream& log) {
  KEEL_CHECK(!o.model_dir.empty(), "--wrong sampled needs --model");
  KEEL_CHECK(o.samples >= 1 && o.temperature > 0, "--wrong sampled needs --samples >= 1 and --temperature > 0");
  auto [model, tok_file, tok] = load_model_dir(o.model_dir, ModelLoadOptions::on(device));
  model->eval();
  torch::NoGradGuard ng;
  auto own = sample_wrong_answers(model, *tok, tasks, PromptTemplate::kChat, o.samples, o.temperature, o.seed);
  const auto found = std::count_if(own.begin(), own.end(), [](const std::string& s) { return !s.empty(); });
  log << found << " of " << tasks.size() << " prompts got a sampled wrong answer; the rest a near miss\n";
  return own;
}

}  // namespace

int64_t export_tasks(const TaskExportOptions& o, torch::Device device, const std::string& out, std::ostream& log) {
  const auto tasks = make_tasks(parse_split(o.split), o.per_family, o.seed, parse_task_families(o.families));
  const bool sampled = o.wrong == "sampled";
  const auto kind = sampled ? WrongAnswerKind::kNear : parse_wrong_answer_kind(o.wrong);
  std::vector<std::string> own;
  if (o.pairs && sampled) own = sampled_wrong_answers(o, device, tasks, log);
  std::ofstream f(out);
  KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot write " << out);
  for (size_t i = 0; i < tasks.size(); ++i) {
    const auto& t = tasks[i];
    const std::string family = task_family_name(t.family);
    if (!o.pairs) {
      f << nlohmann::json{{"prompt", t.prompt}, {"response", t.answer}, {"family", family}}.dump() << "\n";
      continue;
    }
    const auto rejected = sampled && !own[i].empty() ? own[i] : wrong_answer(t.prompt, o.seed * 7919 + i, kind);
    f << nlohmann::json{{"prompt", t.prompt}, {"chosen", t.answer}, {"rejected", rejected}, {"family", family}}.dump() << "\n";
  }
  f.close();
  KEEL_CHECK_KIND(ErrorKind::kIo, f, "write to " << out << " failed");
  return static_cast<int64_t>(tasks.size());
}

}  // namespace keel
