// Batch generation for `keel generate`: prompts (given, or a JSONL of {prompt} or {messages} with
// any other fields) are rendered with the template, sampled in batches with the KV cache, and
// written as JSONL, one line per input in input order: the input line's own fields as given (a
// --prompt: {prompt}), then rendered_prompt (the text after the template), response, finished,
// response_tokens and logprob (an input field of one of these names is replaced).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "actors/sampler.h"

namespace keel {

struct GenerateOptions {
  std::string model_dir;
  std::vector<std::string> prompts;      // user texts, one turn each
  std::string prompts_file;              // JSONL (core/sft_data.h load_prompt_jsonl)
  std::string prompt_template = "auto";  // core/chat_template.h: a preset, or auto (the model's own)
  int64_t batch_size = 16;
  SamplingConfig sampling;  // batch b samples with seed sampling.seed + its first prompt's index
};

// What a generation took: the throughput a user (or a benchmark) reads off its last line.
struct GenerateStats {
  int64_t responses = 0;         // = the lines written
  int64_t new_tokens = 0;        // summed over responses
  double load_seconds = 0;       // the model directory, onto the device
  double sampling_seconds = 0;   // prefills and decoding steps of every batch, from first to last token
  std::string describe() const;  // one line: counts, seconds, new tokens/s
};

// Throws KeelError when there is nothing to generate from.
GenerateStats generate_jsonl(const GenerateOptions& o, torch::Device device, std::ostream& out);

}  // namespace keel
