// Which device each of a node's actors decodes on, as `keel launch` assigns it. On a machine with
// several GPUs, actors told `--device cuda` without an index would all take the current device,
// GPU 0, beside the learner, and leave the other GPUs idle; the launcher gives each its own.
//   - `--actor-devices auto` (the default): actors whose --device is `cuda` take the GPUs this
//     process sees (CUDA_VISIBLE_DEVICES applies) one after another, leaving out those of the
//     processes this launch starts at the head (the learner's and the reward service's --device,
//     `cuda` resolved as they resolve it: learner/data_parallel.h, default_cuda_index) and the
//     first `head_gpus` (learner ranks started elsewhere on this node, as on the Slurm script's
//     head node), as long as one GPU is left; when none is, they share all of them. A --device of
//     cpu or cuda:N is kept as given.
//   - `--actor-devices cuda:1,cuda:2,cpu`: a list the node's actors take in turn; it replaces the
//     actors' --device, so giving both is an error naming each, as is an entry that is not cpu,
//     cuda or cuda:N, or a GPU past the machine's: found before any process starts.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace keel {

struct ActorLearnerJobOptions;

// The GPUs this process sees; 0 without CUDA.
int visible_gpus();

// Each local actor's --device, in the order of the node's actors; an empty entry keeps the
// actor's own options. `gpus` counts the GPUs; it is called only when an actor's device needs the
// count, so a CPU job never starts CUDA.
std::vector<std::string> actor_devices(const ActorLearnerJobOptions& o, const std::function<int()>& gpus = visible_gpus);

}  // namespace keel
