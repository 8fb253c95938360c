// Instruction sets keel's own CPU kernels are compiled for (core/linear.h, core/decode_attention.h):
// each kernel is built once per set and the best one this CPU has is used, unless a test or a
// benchmark limits it to a lower one to exercise that build.
#pragma once

namespace keel {

enum class KernelIsa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };  // kAvx2 means AVX2 + FMA

KernelIsa best_kernel_isa();  // the best this CPU supports
KernelIsa kernel_isa();       // the one in use

// The set a process starts with: `best`, lowered to AVX2 when ATEN_CPU_CAPABILITY (read at start,
// as LibTorch reads it) is "avx2", so that one variable pins the vector width, and so the rounding,
// of LibTorch's kernels and keel's alike.
KernelIsa kernel_isa_for(KernelIsa best, const char* aten_cpu_capability);

// Uses `isa` from now on; false (and no change) when this CPU lacks it.
bool limit_kernel_isa(KernelIsa isa);

}  // namespace keel
