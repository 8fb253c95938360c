// keel_bench read_widths [MB ROUNDS]: how fast the intra-op threads read MB of memory with loads of
// 256 bits against loads of 512 bits, in the loop shape of the single-row kernels (four
// accumulators, no products), alternating the two for ROUNDS rounds. Why the single-row kernels
// read 256-bit vectors in the AVX-512 build too (core/linear_kernels.h, kStreamLanes): on an
// AVX-512 EPYC the 512-bit loop streamed more slowly. Prints one JSON line: medians and 90th
// percentiles of each width's GB/s and the median of the per-round ratios; needs AVX-512.
#pragma once

#include <cstdint>

namespace keel::bench {

void read_widths(int64_t megabytes, int rounds);

}  // namespace keel::bench
