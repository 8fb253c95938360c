#include "learner/checkpoint_writer.h"

#include <chrono>
#include <iostream>
#include <utility>

namespace keel {

namespace {

std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception of unknown type";
  }
}

}  // namespace

CheckpointWriter::CheckpointWriter(std::string run_dir, int64_t keep) : run_dir_(std::move(run_dir)), keep_(keep) {}

CheckpointWriter::~CheckpointWriter() {
  try {
    wait();
  } catch (...) {
    std::cerr << "checkpoint: the last background checkpoint failed: " << describe(std::current_exception()) << "\n";
  }
}

void CheckpointWriter::write(CheckpointSnapshot snapshot, Written written, Failed failed) {
  wait();
  thread_ = std::thread([this, s = std::move(snapshot), written = std::move(written), failed = std::move(failed)]() mutable {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      write_training_checkpoint(run_dir_, s, keep_);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      {
        std::lock_guard<std::mutex> l(mu_);
        last_seconds_ = secs;
      }
      if (written) written(s);
      std::lock_guard<std::mutex> l(mu_);
      spare_ = std::move(s);
    } catch (...) {  // reported on the caller's thread, by the next write() or wait()
      const auto e = std::current_exception();
      {
        std::lock_guard<std::mutex> l(mu_);
        error_ = e;
      }
      if (failed) failed(describe(e));
    }
  });
}

void CheckpointWriter::wait() {
  if (thread_.joinable()) thread_.join();
  std::exception_ptr e;
  {
    std::lock_guard<std::mutex> l(mu_);
    std::swap(e, error_);
  }
  if (e) std::rethrow_exception(e);
}

CheckpointSnapshot CheckpointWriter::take_spare() {
  std::lock_guard<std::mutex> l(mu_);
  return std::exchange(spare_, CheckpointSnapshot{});
}

double CheckpointWriter::last_write_seconds() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_seconds_;
}

}  // namespace keel
