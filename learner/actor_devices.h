// Which device each of a node's actors decodes on, as `keel launch` assigns it. On a machine with
// several GPUs, actors told `--device cuda` without an index would all take the current device,
// GPU 0, beside the learner, and leave the other GPUs idle; the launcher gives each its own.
//   - `--actor-devices auto` (the default): actors whose --device is `cuda` take this node's GPUs
//     one after another, leaving out the GPUs of the processes this launch starts at the head
//     (the learner's and the reward service's --device) and the first `head_gpus` (learner ranks
//     started elsewhere on this node, as the Slurm script's head node has), as long as one GPU is
//     left; when none is, they share all of them. A --device of cpu or cuda:N is kept as given.
//   - `--actor-devices cuda:1,cuda:2,cpu`: a list the node's actors take in turn; it replaces the
//     actors' --device, so giving both is an error naming each.
#pragma once

#include <string>
#include <vector>

namespace keel {

struct ActorLearnerJobOptions;

// The GPUs this process sees (CUDA_VISIBLE_DEVICES applies); 0 without CUDA.
int visible_gpus();

// Each local actor's --device, in the order of the node's actors; an empty entry keeps the
// actor's own options. `gpus` is the number of GPUs on this node.
std::vector<std::string> actor_devices(const ActorLearnerJobOptions& o, int gpus);

// Whether the devices need the node's GPU count (an actor on cuda without an index, or a list).
bool actor_devices_need_gpus(const ActorLearnerJobOptions& o);

}  // namespace keel
