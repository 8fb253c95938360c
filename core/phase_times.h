// Seconds spent in named phases, summed until taken: the breakdown of one training update or one
// actor batch into its parts (waiting for rollouts, forward/backward, publication, generation...),
// logged as metrics "<prefix><phase>". Not thread-safe: one instance per thread of work.
#pragma once

#include <chrono>
#include <string>

#include "core/metrics.h"

namespace keel {

class PhaseTimes {
 public:
  using Clock = std::chrono::steady_clock;

  // Adds the time from its construction to its destruction to one phase.
  class Scope {
   public:
    Scope(PhaseTimes& times, std::string phase) : times_(times), phase_(std::move(phase)), start_(Clock::now()) {}
    ~Scope() { times_.add(phase_, std::chrono::duration<double>(Clock::now() - start_).count()); }
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
  Scalars seconds_;
};

}  // namespace keel
