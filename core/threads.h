// LibTorch starts with one intra-op thread on these machines: every process sets it explicitly.
#pragma once

namespace keel {

// Sets LibTorch's intra-op threads to `n`, or to the cores this process may use when n <= 0.
// Returns the count in force.
int set_threads(int n);

// The threads one at::parallel_for in keel's own code spreads its work over: the intra-op thread
// count when keel is compiled with OpenMP, 1 when it is not (at::parallel_for is inline and runs
// serially in a translation unit built without OpenMP, which a build must not do).
int parallel_for_threads();

}  // namespace keel
