#include "core/threads.h"

#include <sched.h>
#include <torch/torch.h>

#include <thread>

namespace keel {

int set_threads(int n) {
  if (n <= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : static_cast<int>(std::thread::hardware_concurrency());
    if (n <= 0) n = 1;
  }
  torch::set_num_threads(n);
  return torch::get_num_threads();
}

}  // namespace keel
