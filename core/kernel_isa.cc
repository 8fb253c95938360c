#include "core/kernel_isa.h"

#include <atomic>
#include <cstdlib>
#include <string_view>

namespace keel {

KernelIsa best_kernel_isa() {
#if defined(__x86_64__)
  // The AVX-512 build is compiled with FMA too: under avx512f alone GCC left the single-row
  // kernels' 256-bit multiply-adds unfused, so they rounded otherwise than the AVX2 build's.
  const bool fma = __builtin_cpu_supports("fma");
  if (__builtin_cpu_supports("avx512f") && fma) return KernelIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && fma) return KernelIsa::kAvx2;
#endif
  return KernelIsa::kGeneric;
}

KernelIsa kernel_isa_for(KernelIsa best, const char* aten_cpu_capability) {
  if (aten_cpu_capability && std::string_view(aten_cpu_capability) == "avx2" && best == KernelIsa::kAvx512)
    return KernelIsa::kAvx2;
  return best;
}

namespace {
std::atomic<KernelIsa> g_isa{kernel_isa_for(best_kernel_isa(), std::getenv("ATEN_CPU_CAPABILITY"))};
}  // namespace

KernelIsa kernel_isa() { return g_isa.load(std::memory_order_relaxed); }

bool limit_kernel_isa(KernelIsa isa) {
  if (static_cast<int>(isa) > static_cast<int>(best_kernel_isa())) return false;
  g_isa.store(isa);
  return true;
}

}  // namespace keel
