// Batch generation for `keel generate`: prompts (given, or a JSONL of {prompt} or {messages}) are
// rendered with the template, sampled in batches with the KV cache, and written as JSONL lines
// {prompt, response, finished, response_tokens, logprob}.
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
  std::vector<std::string> prompts;  // user texts, one turn each
  std::string prompts_file;          // JSONL (core/sft_data.h load_prompt_jsonl)
  std::string prompt_template = "chat";
  int64_t batch_size = 16;
  SamplingConfig sampling;  // batch b samples with seed sampling.seed + its first prompt's index
};

// Throws KeelError when there is nothing to generate from. Returns the lines written.
int64_t generate_jsonl(const GenerateOptions& o, torch::Device device, std::ostream& out);

}  // namespace keel
