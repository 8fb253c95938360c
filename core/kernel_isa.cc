#include "core/kernel_isa.h"

#include <atomic>

namespace keel {

KernelIsa best_kernel_isa() {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) return KernelIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KernelIsa::kAvx2;
#endif
  return KernelIsa::kGeneric;
}

namespace {
std::atomic<KernelIsa> g_isa{best_kernel_isa()};
}  // namespace

KernelIsa kernel_isa() { return g_isa.load(std::memory_order_relaxed); }

bool limit_kernel_isa(KernelIsa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_kernel_isa())) return false;
  g_isa.store(isa);
  return true;
}

}  // namespace keel
