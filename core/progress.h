// Progress reporting for long work: a redrawn bar on a terminal (step, loss, tokens/s, ETA),
// plain lines every `plain_every` updates when stderr is not a terminal (logs, CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace keel {

class Progress {
 public:
  Progress(std::string label, int64_t total, int64_t start = 0, int64_t plain_every = 10);
  // `info` is appended after the counters, e.g. "loss 2.31 | 1.2k tok/s".
  void update(int64_t done, const std::string& info);
  void finish();
  double elapsed_seconds() const;

 private:
  std::string label_;
  int64_t total_, start_, plain_every_, last_plain_ = -1;
  bool tty_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace keel
