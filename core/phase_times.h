// Seconds spent in named phases, summed until taken: the breakdown of one training update or one
// actor batch into its parts (waiting for rollouts, forward/backward, publication, generation...),
// logged as metrics "<prefix><phase>". Not thread-safe: one instance per thread of work.
//
// Work on a CUDA device runs after the call that queued it returns, so a phase timed by the clock
// alone gets its launches and the phase that first waits for a result gets its kernels. Times kept
// for such a device end every phase by waiting for the work queued on the device's current stream
// (LibTorch's ops; not NCCL's streams, so an all-reduce overlapping backward stays the gradient
// sync's): one synchronisation a phase, and no overlap of one phase's kernels with the next
// phase's host work. Not yet run on a GPU.
#pragma once

#include <c10/core/Stream.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/types.h>

#include <chrono>
#include <string>

#include "core/metrics.h"

namespace keel {

class PhaseTimes {
 public:
  using Clock = std::chrono::steady_clock;

  // `device`: where the timed phases queue their work (its CUDA work is waited for at each phase's end).
  explicit PhaseTimes(torch::Device device = torch::kCPU) : device_(device) {}

  // Adds the time from its construction to its destruction to one phase.
  class Scope {
   public:
    Scope(PhaseTimes& times, std::string phase) : times_(times), phase_(std::move(phase)), start_(Clock::now()) {}
    ~Scope() {
      times_.wait_for_device();
      times_.add(phase_, std::chrono::duration<double>(Clock::now() - start_).count());
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    PhaseTimes& times_;
    std::string phase_;
    Clock::time_point start_;
  };

  Scope time(std::string phase) { return Scope(*this, std::move(phase)); }
  template <class F>
  void run(std::string phase, F&& f) {
    Scope timed(*this, std::move(phase));
    f();
  }
  void add(const std::string& phase, double seconds) { seconds_[phase] += seconds; }
  double total() const {
    double s = 0;
    for (const auto& [phase, v] : seconds_) s += v;
    return s;
  }
  // Every phase as "<prefix><phase>", then all cleared.
  Scalars take(const std::string& prefix) {
    Scalars s;
    for (const auto& [phase, v] : seconds_) s[prefix + phase] = v;
    seconds_.clear();
    return s;
  }

 private:
  // An error met here is not thrown from a destructor (which would end the process): a kernel's
  // fault stays with the device, and the next call that waits on it reports it.
  void wait_for_device() const noexcept {
    if (!device_.is_cuda()) return;
    try {
      c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_).synchronize();
    } catch (...) {
    }
  }

  torch::Device device_;
  Scalars seconds_;
};

}  // namespace keel
