// CheckpointWriter: writes training checkpoints (learner/train_state.h) on a thread of its own, one
// at a time, so that training goes on while the disk works. The loop hands it a snapshot whose
// tensors are copies; the checkpoint becomes the one a resume starts from (checkpoints/latest)
// only once it is whole on disk, and then `written` runs, on the writer's thread: a runtime
// publishes the version the checkpoint holds from there, so that no actor holds a version a
// resume would lose. A write that fails is reported by the next call on the caller's thread (and
// at once to `failed`).
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "learner/train_state.h"

namespace keel {

class CheckpointWriter {
 public:
  using Written = std::function<void(const CheckpointSnapshot&)>;
  using Failed = std::function<void(const std::string& what)>;
  CheckpointWriter(std::string run_dir, int64_t keep);
  ~CheckpointWriter();  // waits for the write in flight (its error, if any, is logged)
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Waits for the write before (rethrowing its error), then starts writing `snapshot`. If the
  // write (or `written`) fails, `failed` runs on the writer's thread with the error's text, at
  // once: a caller blocked on something only `written` would bring can stop waiting.
  void write(CheckpointSnapshot snapshot, Written written = {}, Failed failed = {});
  // Waits until no write is in flight; rethrows the error of a write that failed.
  void wait();
  // Seconds the last finished write took (0 before the first).
  double last_write_seconds() const;
  // The snapshot of the last write that succeeded, once written and published, for the next
  // snapshot to copy into (snapshot_training_state's `reuse`); empty when there is none.
  CheckpointSnapshot take_spare();

 private:
  std::string run_dir_;
  int64_t keep_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::exception_ptr error_;
  double last_seconds_ = 0;
  CheckpointSnapshot spare_;
};

}  // namespace keel
