// LibTorch starts with one intra-op thread on these machines: every process sets it explicitly.
#pragma once

namespace keel {

// Sets LibTorch's intra-op threads to `n`, or to the cores this process may use when n <= 0.
// Returns the count in force.
int set_threads(int n);

}  // namespace keel
