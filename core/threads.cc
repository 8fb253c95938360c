#include "core/threads.h"

#include <ATen/Parallel.h>
#include <sched.h>
#include <torch/torch.h>

#include <atomic>
#include <bitset>
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

int parallel_for_threads() {
  std::atomic<unsigned long long> seen{0};
  // One item per chunk (grain 1), many chunks: every thread of the region takes one.
  const int64_t items = 64 * static_cast<int64_t>(std::max(1, torch::get_num_threads()));
  at::parallel_for(0, items, 1, [&](int64_t, int64_t) { seen |= 1ULL << (at::get_thread_num() % 64); });
  return static_cast<int>(std::bitset<64>(seen.load()).count());
}

}  // namespace keel
