#include "actors/generate.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/model_loader.h"
#include "core/sft_data.h"

namespace keel {

namespace {
std::vector<std::string> rendered_prompts(const GenerateOptions& o) {
  const auto t = parse_prompt_template(o.prompt_template);
  std::vector<std::string> texts;
  for (const auto& p : o.prompts) texts.push_back(render_prompt(p, t));
  if (!o.prompts_file.empty())
    for (const auto& history : load_prompt_jsonl(o.prompts_file, BadLinePolicy::kFail))
      texts.push_back(render_prompt(history, t));
  KEEL_CHECK_KIND(ErrorKind::kInvalidArgument, !texts.empty(), "nothing to generate from: give --prompt or --prompts");
  return texts;
}
}  // namespace

int64_t generate_jsonl(const GenerateOptions& o, torch::Device device, std::ostream& out) {
  KEEL_CHECK_KIND(ErrorKind::kInvalidArgument, o.batch_size > 0, "--batch-size must be positive, got " << o.batch_size);
  const auto texts = rendered_prompts(o);
  auto [model, tok_file, tok] = load_model_dir(o.model_dir, ModelLoadOptions::on(device));
  const auto batch = static_cast<size_t>(o.batch_size);
  for (size_t i = 0; i < texts.size(); i += batch) {
    const size_t end = std::min(texts.size(), i + batch);
    std::vector<std::vector<int32_t>> ids;
    for (size_t j = i; j < end; ++j) ids.push_back(make_sft_example(texts[j], "", *tok).prompt);
    SamplingConfig sc = o.sampling;
    sc.seed = o.sampling.seed + i;
    const auto r = sample(model, ids, sc, tok->specials().eos, tok->specials().pad);
    for (size_t j = i; j < end; ++j) {
      double lp = 0;
      for (float x : r.logprobs[j - i]) lp += x;
      out << nlohmann::json{{"prompt", texts[j]},
                            {"response", tok->decode(r.responses[j - i])},
                            {"finished", static_cast<bool>(r.finished[j - i])},
                            {"response_tokens", r.responses[j - i].size()},
                            {"logprob", lp}}
                 .dump()
          << "\n";
    }
  }
  return static_cast<int64_t>(texts.size());
}

}  // namespace keel
