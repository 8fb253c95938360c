#include "learner/actor_devices.h"

#include <torch/cuda.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/shell_words.h"
#include "learner/actor_learner_job.h"
#include "learner/data_parallel.h"

namespace keel {

namespace {

// The GPU a --device value names, spelled as LibTorch accepts it (no leading zeros; four digits
// at most keep stoi in range); -1 for cpu, an empty value or anything else.
int gpu_of(const std::string& device, int gpus) {
  if (device == "cuda") return default_cuda_index(distributed_env_from_environment(), gpus);
  const std::string prefix = "cuda:";
  if (device.rfind(prefix, 0) != 0) return -1;
  const auto digits = device.substr(prefix.size());
  if (digits.empty() || digits.size() > 4 || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  if (digits.size() > 1 && digits[0] == '0') return -1;
  return std::stoi(digits);
}

// The entries of a comma-separated list, each without the spaces around it.
std::vector<std::string> list_entries(const std::string& text) {
  std::vector<std::string> out;
  size_t from = 0;
  while (true) {
    const auto at = text.find(',', from);
    auto entry = text.substr(from, at == std::string::npos ? std::string::npos : at - from);
    entry.erase(0, entry.find_first_not_of(' '));
    entry.erase(entry.find_last_not_of(' ') + 1);
    out.push_back(entry);
    if (at == std::string::npos) return out;
    from = at + 1;
  }
}

std::vector<std::string> listed_devices(const ActorLearnerJobOptions& o, const std::string& given,
                                        const std::function<int()>& gpus) {
  KEEL_CHECK(given.empty(), "--actor-devices " << o.actor_devices << " and the actors' --device " << given
                                               << " both say where the actors run; give one of them");
  const auto list = list_entries(o.actor_devices);
  const int count = o.actor_devices.find("cuda") == std::string::npos ? 0 : gpus();
  for (const auto& d : list) {
    KEEL_CHECK(d == "cpu" || gpu_of(d, count) >= 0,
               "--actor-devices: '" << d << "' is not cpu, cuda or cuda:N (give a list such as cuda:1,cuda:2, or auto)");
    KEEL_CHECK(d == "cpu" || gpu_of(d, count) < count,
               "--actor-devices: " << d << ", but this machine has " << count << " CUDA device(s)");
  }
  std::vector<std::string> out(o.actors);
  for (int i = 0; i < o.actors; ++i) out[i] = list[i % list.size()];
  return out;
}

// The GPUs of this node that processes at the head hold: the first head_gpus, and the learner's
// and the reward service's when this launch starts them.
std::set<int> head_gpus_of(const ActorLearnerJobOptions& o, int gpus) {
  std::set<int> held;
  for (int g = 0; g < std::min(o.head_gpus, gpus); ++g) held.insert(g);
  if (o.role != "actors")
    for (const std::string role : {"learner", "reward"})
      if (const int g = gpu_of(arg_value(role_args(o, role), "--device"), gpus); g >= 0 && g < gpus) held.insert(g);
  return held;
}

}  // namespace

int visible_gpus() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

std::vector<std::string> actor_devices(const ActorLearnerJobOptions& o, const std::function<int()>& gpus) {
  const auto given = arg_value(role_args(o, "actor"), "--device");
  if (o.actor_devices != "auto") return listed_devices(o, given, gpus);
  std::vector<std::string> out(o.actors);
  if (given != "cuda" || o.actors == 0) return out;  // cpu or a device the user pinned stays as given
  const int count = gpus();
  if (count <= 0) return out;  // no GPU here: the actor itself says so at start
  const auto held = head_gpus_of(o, count);
  std::vector<int> free;
  for (int g = 0; g < count; ++g)
    if (!held.count(g)) free.push_back(g);
  if (free.empty())  // every GPU is the head's: share them
    for (int g = 0; g < count; ++g) free.push_back(g);
  for (int i = 0; i < o.actors; ++i) out[i] = "cuda:" + std::to_string(free[i % free.size()]);
  return out;
}

}  // namespace keel
