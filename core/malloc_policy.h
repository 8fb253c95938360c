// What a keel process does with memory it frees: keeps it for the next step instead of handing it
// back to the kernel.
#pragma once

#include <cstddef>

namespace keel {

// Blocks up to this size are served from, and freed back to, the C library's heaps.
inline constexpr size_t kKeptBlockBytes = size_t{256} << 20;

// LibTorch frees a training step's activations and gradients, and ZeroMQ each message buffer, back
// to malloc, and the next step asks for the same sizes. glibc maps every block above its mmap
// threshold (32 MiB at most by its own adjustment: the logits of one small batch are larger) with a
// fresh mmap and unmaps it on free, and trims the heap's top, so every step faults those pages
// back in, zeroed by the kernel: pretraining at d=128 on 2 cores took 27% less wall time once both
// thresholds were raised to kKeptBlockBytes. The cost: a process keeps its peak heap resident
// (128 MB more at d=128, 68 MB at d=512). Call once at the start of main(), before threads start.
// Returns false where the C library is not glibc or refuses; nothing is changed then.
bool keep_freed_memory();

}  // namespace keel
