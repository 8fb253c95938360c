// Built-in tasks as files (`keel tasks export`): SFT JSONL {prompt, response, family}, or
// preference pairs {prompt, chosen, rejected, family}: the right answer against a wrong one that
// is a near miss, a random answer of the same shape, either, or the model's own sampled mistake.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace keel {

struct TaskExportOptions {
  std::string split = "train";  // train | held-out
  int per_family = 1000;
  std::vector<std::string> families;  // none: all
  uint64_t seed = 1;
  bool pairs = false;
  std::string wrong = "mixed";  // near | random | mixed | sampled
  // wrong = sampled: the model whose wrong answers are taken (a near miss where all its draws were right)
  std::string model_dir;
  int samples = 4;
  double temperature = 1.0;
};

// Writes the tasks to `out`; progress notes go to `log`. Returns the lines written.
int64_t export_tasks(const TaskExportOptions& o, torch::Device device, const std::string& out, std::ostream& log);

}  // namespace keel
