// The rollout log: every rollout the learner receives, appended to an HDF5 file that Python
// reads with h5py and `keel prefs mine` turns into preference pairs. Layout (format version 1),
// all datasets one-dimensional, chunked and extendable:
//   /prompt_tokens    int32  flat          /prompt_offsets    int64 [N+1]
//   /response_tokens  int32  flat          /response_offsets  int64 [N+1]
//   /logprobs         float32 flat (aligned with response_tokens)
//   /score float32 [N]  /policy_version uint64 [N]  /actor_id uint32 [N]  /group_id uint64 [N]
//   /finished uint8 [N]  /learner_version uint64 [N] (the learner's version when it arrived)
//   /uid uint64 [N] (unique per rollout, set by its actor)
//   /trained_uid uint64 [M], /trained_version uint64 [M]: rollouts the learner took for the update
//   that makes policy `version` (an update cut short by a crash leaves its rows, never trained)
// Root attributes: format_version (int, 2; version 1 logs, without uid and trained_*, are read),
// tokenizer (string). Rows i span
// prompt_tokens[prompt_offsets[i]:prompt_offsets[i+1]], likewise for responses.
// Flushed after every append, so a killed learner leaves a readable file. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "wire/messages.h"

namespace keel {

class RolloutLog {
 public:
  // Creates `path`, or appends to it when it exists with the same format version. KeelError of
  // kind kIo / kOutOfSpace when the file cannot be created or written, kCorruptData when an
  // existing file is not a rollout log of this version.
  RolloutLog(const std::string& path, const std::string& tokenizer_identity);
  ~RolloutLog();
  void append(const std::vector<wire::Rollout>& rollouts, uint64_t learner_version);
  // Records that the rollouts `uids` were taken for the update that makes policy `version`.
  void mark_trained(const std::vector<uint64_t>& uids, uint64_t version);
  int64_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One row of a rollout log, as read back.
struct LoggedRollout {
  std::vector<int32_t> prompt, response;
  std::vector<float> logprobs;  // behaviour log-probs, one per response token
  float score = 0;
  uint64_t policy_version = 0, group_id = 0, learner_version = 0, uid = 0;
  uint32_t actor_id = 0;
  bool finished = false;
};

// A rollout as the log keeps it, and back (the prompt and response texts are not logged).
LoggedRollout to_logged(wire::Rollout r);
wire::Rollout to_wire(const LoggedRollout& l);

struct RolloutLogContents {
  std::string tokenizer;
  std::vector<LoggedRollout> rows;
  struct Trained {
    uint64_t uid, version;
  };
  std::vector<Trained> trained;  // in the order taken
};

// Reads a whole rollout log (checked: format version, datasets, offsets). A log that a killed
// learner left mid-append is read up to its last complete row. Throws KeelError of kind kIo when
// the file is absent or cannot be opened, kCorruptData when its layout or offsets are inconsistent
// (naming the dataset and the row).
RolloutLogContents read_rollout_log(const std::string& path);

}  // namespace keel
