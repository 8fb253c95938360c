// Sampling commands: generate, the built-in task evaluation and the evaluation on your own prompts.
#include <fstream>
#include <iostream>

#include "actors/generate.h"
#include "actors/prompt_eval.h"
#include "actors/task_eval.h"
#include "core/error.h"
#include "launch/commands.h"
#include "launch/options.h"
#include "reward/scorer.h"

namespace keel {

int cmd_generate(const Args& args) {
  GenerateOptions o;
  std::string out, device = "cpu";
  int threads = 0;
  po::options_description d("keel generate");
  add_runtime_options(d, threads, device);
  add_sampling_options(d, o.sampling);
  // clang-format off
  d.add_options()("model", po::value(&o.model_dir)->required(), "model directory")(
      "prompt", po::value(&o.prompts)->multitoken(), "prompt text (repeatable)")(
      "prompts", po::value(&o.prompts_file), "JSONL file of {prompt} or {messages}")(
      "out", po::value(&out), "output JSONL (default: standard output)")(
      "template", po::value(&o.prompt_template)->default_value(o.prompt_template), "chat format: auto (the model's tokenizer_config.json, else chat) | chat | chatml | llama2 | llama3 | zephyr | none")(
      "batch-size", po::value(&o.batch_size)->default_value(o.batch_size), "prompts per batch");
  // clang-format on
  if (parse_options(args, "generate", "Samples responses with the KV cache; writes JSONL.", d).help) return 0;
  const auto dev = apply_runtime(threads, device);
  if (out.empty()) {
    std::cerr << generate_jsonl(o, dev, std::cout).describe() << "\n";
    return 0;
  }
  std::ofstream file(out);
  KEEL_CHECK_KIND(ErrorKind::kIo, file, "cannot write " << out);
  const auto stats = generate_jsonl(o, dev, file);
  file.close();
  KEEL_CHECK_KIND(ErrorKind::kIo, file, "write to " << out << " failed");
  std::cerr << stats.describe() << "\n";
  return 0;
}

int cmd_eval_tasks(const Args& args) {
  TaskEvalRunOptions o;
  std::string device = "cpu", out;
  int threads = 0;
  po::options_description d("keel eval tasks");
  add_runtime_options(d, threads, device);
  // clang-format off
  d.add_options()("model", po::value(&o.model_dir)->required(), "model directory")(
      "split", po::value(&o.split)->default_value(o.split), "train | held-out")(
      "per-family", po::value(&o.per_family)->default_value(o.per_family), "tasks per family")(
      "seed", po::value(&o.seed)->default_value(o.seed), "task seed")(
      "families", po::value(&o.families)->multitoken(), "families to evaluate (default all): arithmetic reverse sort count")(
      "template", po::value(&o.prompt_template)->default_value(o.prompt_template), "chat format: auto (the model's tokenizer_config.json, else chat) | chat | chatml | llama2 | llama3 | zephyr | none")(
      "temperature", po::value(&o.temperature)->default_value(o.temperature),
      "0: greedy decoding; above 0: sample at this temperature, so accuracy is the policy's expected reward")(
      "samples", po::value(&o.samples)->default_value(o.samples), "sampled responses per task when --temperature > 0")(
      "out", po::value(&out), "also write the result as JSON here");
  // clang-format on
  if (parse_options(args, "eval tasks",
                    "Exact-match accuracy per built-in task family: greedy, or the mean over sampled responses.", d)
          .help)
    return 0;
  const auto r = run_task_eval(o, apply_runtime(threads, device));
  print_task_eval(r, std::cout);
  if (!out.empty()) {
    std::ofstream f(out);
    f << task_eval_json(r, o).dump(2) << "\n";
    KEEL_CHECK_KIND(ErrorKind::kIo, f, "cannot write " << out);
  }
  return 0;
}

int cmd_eval_prompts(const Args& args) {
  OfflinePromptEvalOptions o;
  ScorerOptions scorer;
  std::string device = "cpu", out;
  int threads = 0;
  po::options_description d("keel eval prompts");
  add_runtime_options(d, threads, device);
  // clang-format off
  d.add_options()("model", po::value(&o.model_dir)->required(), "model directory")(
      "prompts", po::value(&o.eval.prompts_file)->required(),
      "JSONL of {prompt} or {messages}; every other field of a line goes to the reward program")(
      "reward-kind", po::value(&scorer.kind)->default_value(scorer.kind), "task | program | model (as keel reward serve --kind)")(
      "reward-program", po::value(&scorer.program), "kind program: the command line of the reward program (docs/reward_protocol.md)")(
      "program-timeout-ms", po::value(&scorer.program_timeout_ms)->default_value(scorer.program_timeout_ms), "kind program: deadline of one batch")(
      "reward-model", po::value(&scorer.model), "kind model: a reward-model directory")(
      "temperature", po::value(&o.temperature)->default_value(o.temperature), "temperature of the sampled responses")(
      "samples", po::value(&o.eval.samples)->default_value(o.eval.samples), "sampled responses per prompt (and one greedy)")(
      "max-new-tokens", po::value(&o.eval.max_new_tokens)->default_value(o.eval.max_new_tokens), "longest response")(
      "template", po::value(&o.eval.prompt_template)->default_value(o.eval.prompt_template), "chat format: auto (the model's tokenizer_config.json, else chat) | chat | chatml | llama2 | llama3 | zephyr | none")(
      "seed", po::value(&o.eval.seed)->default_value(o.eval.seed), "seed of the sampled responses")(
      "out", po::value(&out), "per-prompt JSONL: the line's own fields, then greedy and samples with their scores");
  // clang-format on
  if (parse_options(args, "eval prompts",
                    "Mean reward of a model's responses to your own held-out prompts (greedy and sampled), scored in this "
                    "process like keel reward serve would.",
                    d)
          .help)
    return 0;
  scorer.device = device;
  const auto r = run_offline_prompt_eval(o, scorer, apply_runtime(threads, device));
  std::cout << nlohmann::json(r.metrics).dump(2) << "\n";
  if (!out.empty()) write_jsonl(out, r.rows);
  return 0;
}

}  // namespace keel
