// Sampling commands: generate and the built-in task evaluation.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "actors/sampler.h"
#include "actors/task_eval.h"
#include "core/model_loader.h"
#include "core/checkpoint.h"
#include "core/error.h"
#include "core/jsonl.h"
#include "core/sft_data.h"
#include "launch/commands.h"
#include "launch/options.h"

namespace keel {

int cmd_generate(const Args& args) {
  std::string model_dir, prompts_file, out, tmpl = "chat", device = "cpu";
  std::vector<std::string> prompts;
  int threads = 0;
  int64_t batch_size = 16;
  SamplingConfig s;
  po::options_description d("keel generate");
  add_runtime_options(d, threads, device);
  add_sampling_options(d, s);
  // clang-format off
  d.add_options()("model", po::value(&model_dir)->required(), "model directory")(
      "prompt", po::value(&prompts)->multitoken(), "prompt text (repeatable)")(
      "prompts", po::value(&prompts_file), "JSONL file of {prompt} or {messages}")(
      "out", po::value(&out), "output JSONL (default: standard output)")(
      "template", po::value(&tmpl)->default_value(tmpl), "prompt template: chat | none")(
      "batch-size", po::value(&batch_size)->default_value(batch_size), "prompts per batch");
  // clang-format on
  if (parse_options(args, "generate", "Samples responses with the KV cache; writes JSONL.", d).help) return 0;
  const auto dev = apply_runtime(threads, device);
  const auto t = parse_prompt_template(tmpl);
  std::vector<std::string> texts;
  for (const auto& p : prompts) texts.push_back(render_prompt(p, t));
  if (!prompts_file.empty()) {
    read_jsonl(prompts_file, BadLinePolicy::kFail, [&](const nlohmann::json& j) {
      if (j.contains("messages")) {
        std::vector<ChatMessage> h;
        for (const auto& m : j["messages"]) h.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
        texts.push_back(render_prompt(h, t));
      } else {
        KEEL_CHECK(j.contains("prompt") && j["prompt"].is_string(), "missing string field 'prompt'");
        texts.push_back(render_prompt(j["prompt"].get<std::string>(), t));
      }
    });
  }
  KEEL_CHECK(!texts.empty(), "nothing to generate from: give --prompt or --prompts");
  auto [model, tok_file, tok] = load_model_dir(model_dir, ModelLoadOptions::on(dev));
  std::ofstream file;
  if (!out.empty()) {
    file.open(out);
    KEEL_CHECK(file, "cannot write " << out);
  }
  std::ostream& os = out.empty() ? std::cout : file;
  for (size_t i = 0; i < texts.size(); i += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(texts.size(), i + static_cast<size_t>(batch_size));
    std::vector<std::vector<int32_t>> ids;
    for (size_t j = i; j < end; ++j) ids.push_back(make_sft_example(texts[j], "", *tok).prompt);
    SamplingConfig sc = s;
    sc.seed = s.seed + i;
    const auto r = sample(model, ids, sc, tok->specials().eos, tok->specials().pad);
    for (size_t j = i; j < end; ++j) {
      double lp = 0;
      for (float x : r.logprobs[j - i]) lp += x;
      os << nlohmann::json{{"prompt", texts[j]},
                           {"response", tok->decode(r.responses[j - i])},
                           {"finished", static_cast<bool>(r.finished[j - i])},
                           {"response_tokens", r.responses[j - i].size()},
                           {"logprob", lp}}
                .dump()
         << "\n";
    }
  }
  return 0;
}

int cmd_eval_tasks(const Args& args) {
  std::string model_dir, split = "held-out", tmpl = "chat", device = "cpu", out;
  int threads = 0, per_family = 100, samples = 4;
  double temperature = 0;
  uint64_t seed = 1;
  std::vector<std::string> families;
  po::options_description d("keel eval tasks");
  add_runtime_options(d, threads, device);
  // clang-format off
  d.add_options()("model", po::value(&model_dir)->required(), "model directory")(
      "split", po::value(&split)->default_value(split), "train | held-out")(
      "per-family", po::value(&per_family)->default_value(per_family), "tasks per family")(
      "seed", po::value(&seed)->default_value(seed), "task seed")(
      "families", po::value(&families)->multitoken(), "families to evaluate (default all): arithmetic reverse sort count")(
      "template", po::value(&tmpl)->default_value(tmpl), "prompt template: chat | none")(
      "temperature", po::value(&temperature)->default_value(temperature),
      "0: greedy decoding; above 0: sample at this temperature, so accuracy is the policy's expected reward")(
      "samples", po::value(&samples)->default_value(samples), "sampled responses per task when --temperature > 0")(
      "out", po::value(&out), "also write the result as JSON here");
  // clang-format on
  if (parse_options(args, "eval tasks",
                    "Exact-match accuracy per built-in task family: greedy, or the mean over sampled responses.", d)
          .help)
    return 0;
  KEEL_CHECK(temperature >= 0, "--temperature must be >= 0, got " << temperature);
  KEEL_CHECK(samples >= 1, "--samples must be >= 1, got " << samples);
  const auto dev = apply_runtime(threads, device);
  auto [model, tok_file, tok] = load_model_dir(model_dir, ModelLoadOptions::on(dev));
  std::vector<TaskFamily> fams;
  for (const auto& f : families) fams.push_back(parse_task_family(f));
  if (fams.empty()) fams.assign(std::begin(kAllTaskFamilies), std::end(kAllTaskFamilies));
  const auto tasks = make_tasks(split == "train" ? TaskSplit::kTrain : TaskSplit::kHeldOut, per_family, seed, fams);
  const bool sampled = temperature > 0;
  const auto r =
      evaluate_tasks(model, *tok, tasks, parse_prompt_template(tmpl), 32, 24, temperature, sampled ? samples : 1, seed + 6);
  nlohmann::json j;
  for (const auto& [fam, acc] : r.accuracy) {
    std::printf("%-12s %6.3f  (%lld tasks)\n", fam.c_str(), acc, static_cast<long long>(r.count.at(fam)));
    j["accuracy"][fam] = acc;
  }
  std::printf("%-12s %6.3f\n", "mean", r.mean_accuracy);
  j["mean_accuracy"] = r.mean_accuracy;
  j["model"] = model_dir;
  j["temperature"] = temperature;
  j["samples"] = sampled ? samples : 1;
  if (!out.empty()) {
    std::ofstream f(out);
    f << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace keel
