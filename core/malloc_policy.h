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
// fresh mmap and unmaps it on free, and trims the heap's top, so every step faults those pages back
// in, zeroed by the kernel. This raises both thresholds to kKeptBlockBytes (threads' own arenas,
// 64 MiB heaps, still map larger blocks alone). The cost: a process keeps its peak heap resident.
// Figures: bench/README.md, "Memory kept between steps". Call once at the start of main(), before
// threads start. Returns false where the C library is not glibc or refuses a threshold (a refused
// mmap threshold falls back to glibc's 32 MiB maximum).
bool keep_freed_memory();

// For a run that trades time for memory (activation checkpointing): glibc's own thresholds at
// their most (32 MiB mmap, 64 MiB trim), so freed large blocks go back to the kernel at once (the
// kept heap raised such a step's peak at GPT-2 small's shape by 12%). Call before the run
// allocates its model's activations.
void return_freed_memory();

}  // namespace keel
