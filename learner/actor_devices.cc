#include "learner/actor_devices.h"

#include <torch/cuda.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/shell_words.h"
#include "learner/actor_learner_job.h"

namespace keel {

namespace {

// The GPU a --device value names: `cuda` is the current device, GPU 0 in a process of its own;
// -1 for cpu, an empty value or anything else.
int gpu_of(const std::string& device) {
  if (device == "cuda") return 0;
  const std::string prefix = "cuda:";
  if (device.rfind(prefix, 0) != 0 || device.size() == prefix.size() || device.size() > prefix.size() + 4) return -1;
  const auto digits = device.substr(prefix.size());
  if (digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoi(digits);
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  size_t from = 0;
  while (true) {
    const auto at = text.find(',', from);
    out.push_back(text.substr(from, at == std::string::npos ? std::string::npos : at - from));
    if (at == std::string::npos) return out;
    from = at + 1;
  }
}

std::vector<std::string> listed_devices(const ActorLearnerJobOptions& o, int gpus) {
  const auto given = arg_value(role_args(o, "actor"), "--device");
  KEEL_CHECK(given.empty(), "--actor-devices " << o.actor_devices << " and the actors' --device " << given
                                               << " both say where the actors run; give one of them");
  const auto list = split_commas(o.actor_devices);
  for (const auto& d : list) {
    KEEL_CHECK(d == "cpu" || gpu_of(d) >= 0,
               "--actor-devices: '" << d << "' is not cpu, cuda or cuda:N (give a list such as cuda:1,cuda:2, or auto)");
    KEEL_CHECK(gpu_of(d) < gpus, "--actor-devices: " << d << ", but this machine has " << gpus << " CUDA device(s)");
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
      if (const int g = gpu_of(arg_value(role_args(o, role), "--device")); g >= 0 && g < gpus) held.insert(g);
  return held;
}

}  // namespace

int visible_gpus() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

bool actor_devices_need_gpus(const ActorLearnerJobOptions& o) {
  if (o.actor_devices != "auto") return o.actor_devices.find("cuda") != std::string::npos;
  return arg_value(role_args(o, "actor"), "--device") == "cuda";
}

std::vector<std::string> actor_devices(const ActorLearnerJobOptions& o, int gpus) {
  if (o.actor_devices != "auto") return listed_devices(o, gpus);
  std::vector<std::string> out(o.actors);
  // cpu or a device the user pinned stays as given; with no GPU the actor itself says so at start.
  if (arg_value(role_args(o, "actor"), "--device") != "cuda" || gpus <= 0) return out;
  const auto held = head_gpus_of(o, gpus);
  std::vector<int> free;
  for (int g = 0; g < gpus; ++g)
    if (!held.count(g)) free.push_back(g);
  if (free.empty())  // every GPU is the head's: share them
    for (int g = 0; g < gpus; ++g) free.push_back(g);
  for (int i = 0; i < o.actors; ++i) out[i] = "cuda:" + std::to_string(free[i % free.size()]);
  return out;
}

}  // namespace keel
