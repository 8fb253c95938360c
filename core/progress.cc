#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace keel {

Progress::Progress(std::string label, int64_t total, int64_t start, int64_t plain_every)
    : label_(std::move(label)), total_(total), start_(start), plain_every_(plain_every > 0 ? plain_every : 1),
      tty_(::isatty(STDERR_FILENO) != 0), t0_(std::chrono::steady_clock::now()) {}

double Progress::elapsed_seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

void Progress::update(int64_t done, const std::string& info) {
  const double el = elapsed_seconds();
  const double rate = (done - start_) / (el > 1e-9 ? el : 1e-9);
  const double eta = rate > 0 ? (total_ - done) / rate : 0;
  char eta_s[32];
  std::snprintf(eta_s, sizeof eta_s, "%02d:%02d:%02d", static_cast<int>(eta / 3600), static_cast<int>(eta / 60) % 60,
                static_cast<int>(eta) % 60);
  if (tty_) {
    const int width = 24;
    const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld | %s | ETA %s\033[K", label_.c_str(), bar.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), info.c_str(), eta_s);
    std::fflush(stderr);
  } else if (done == total_ || last_plain_ < 0 || done - last_plain_ >= plain_every_) {
    std::fprintf(stderr, "%s %lld/%lld | %s | ETA %s\n", label_.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), info.c_str(), eta_s);
    last_plain_ = done;
  }
}

void Progress::finish() {
  if (tty_) std::fprintf(stderr, "\n");
}

}  // namespace keel
