#include "actors/generate.h"

#include <chrono>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/model_loader.h"
#include "core/sft_data.h"

namespace keel {

namespace {

struct Input {
  nlohmann::json line;  // what the output line starts from: the input's fields as given
  std::vector<ChatMessage> conversation;
};

std::vector<Input> inputs(const GenerateOptions& o) {
  std::vector<Input> in;
  for (const auto& p : o.prompts) in.push_back({{{"prompt", p}}, {{"user", p}}});
  if (!o.prompts_file.empty())
    for (const auto& r : load_prompt_records(o.prompts_file, BadLinePolicy::kFail))
      in.push_back({nlohmann::json::parse(r.line), r.conversation});
  KEEL_CHECK_KIND(ErrorKind::kInvalidArgument, !in.empty(), "nothing to generate from: give --prompt or --prompts");
  return in;
}

}  // namespace

std::string GenerateStats::describe() const {
  std::ostringstream s;
  s << "generated " << responses << " responses, " << new_tokens << " new tokens in " << sampling_seconds
    << " s of sampling: " << (sampling_seconds > 0 ? static_cast<double>(new_tokens) / sampling_seconds : 0.0)
    << " new tokens/s (model load " << load_seconds << " s)";
  return s.str();
}

GenerateStats generate_jsonl(const GenerateOptions& o, torch::Device device, std::ostream& out) {
  using Clock = std::chrono::steady_clock;
  KEEL_CHECK_KIND(ErrorKind::kInvalidArgument, o.batch_size > 0, "--batch-size must be positive, got " << o.batch_size);
  const auto in = inputs(o);
  GenerateStats stats;
  const auto load_start = Clock::now();
  auto [model, tok_file, tok] = load_model_dir(o.model_dir, ModelLoadOptions::on(device));
  stats.load_seconds = std::chrono::duration<double>(Clock::now() - load_start).count();
  const auto t = resolve_prompt_template(o.prompt_template, o.model_dir);
  const auto batch = static_cast<size_t>(o.batch_size);
  for (size_t i = 0; i < in.size(); i += batch) {
    const size_t end = std::min(in.size(), i + batch);
    std::vector<std::vector<int32_t>> ids;
    for (size_t j = i; j < end; ++j) ids.push_back(prompt_ids(in[j].conversation, t, *tok));
    SamplingConfig sc = o.sampling;
    sc.seed = o.sampling.seed + i;
    const auto sample_start = Clock::now();
    const auto r = sample(model, ids, sc, tok->specials().eos, tok->specials().pad);  // tokens end on the CPU: timed whole
    stats.sampling_seconds += std::chrono::duration<double>(Clock::now() - sample_start).count();
    for (size_t j = i; j < end; ++j) {
      stats.new_tokens += static_cast<int64_t>(r.responses[j - i].size());
      double lp = 0;
      for (float x : r.logprobs[j - i]) lp += x;
      auto line = in[j].line;
      line["rendered_prompt"] = render_prompt(in[j].conversation, t);
      line["response"] = tok->decode(r.responses[j - i]);
      line["finished"] = static_cast<bool>(r.finished[j - i]);
      line["response_tokens"] = r.responses[j - i].size();
      line["logprob"] = lp;
      out << line.dump() << "\n";
    }
  }
  stats.responses = static_cast<int64_t>(in.size());
  return stats;
}

}  // namespace keel
