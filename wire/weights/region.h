// SharedWeights: policy weights for processes on one host, in one shared-memory file (/dev/shm).
// The file holds two slots of raw tensor bytes, each guarded by a sequence counter (a seqlock).
// The learner writes version v into slot v % 2 with one copy from its parameters; an actor copies
// the slot straight into its own parameters with one copy and then checks that the slot was not
// rewritten meanwhile (which needs the learner to publish two more versions during that copy).
// Every page is allocated when the file is created, so a new version costs only the two copies.
// A CPU actor can skip its copy: it binds its parameters to views of the slot (views()) and,
// after generating with them, checks with unchanged() that the slot was not rewritten meanwhile.
//
// File layout (little-endian; docs/formats.md):
//   0   "KEELSHW1"            magic and format
//   8   u64 layout_bytes      JSON [{"name", "dtype", "shape", "offset", "bytes"}] at byte 256
//   16  u64 slot_bytes        bytes per slot; tensor offsets are within a slot, 64-byte aligned
//   24  u64 data_offset       slot i starts at data_offset + i * slot_bytes (4096-aligned)
//   32  u64 seq[2]            odd while slot i is being written
//   48  u64 held[2]           1 + the version slot i holds (0: none yet)
//   64  u64 newest            1 + the newest complete version (0: none yet)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/safetensors.h"

namespace keel {

class SharedWeights {
 public:
  // Creates (replacing) the file at `path`, laid out for tensors with the names, dtypes and shapes
  // of `like`, and allocates all its pages. Throws KeelError naming the path: of kind kOutOfSpace
  // when the file system has no room (for example a small /dev/shm in a container: ENOSPC, EFBIG,
  // ENOMEM, EDQUOT while creating, sizing or mapping the file), kIo for any other failure of the
  // file system. The creator removes the file.
  static std::unique_ptr<SharedWeights> create(const std::string& path, const TensorMap& like);
  // Maps an existing file read-only. Throws KeelError naming the defect: kIo when it cannot be
  // opened or mapped (missing, permissions), kCorruptData when it is not a weights file or its
  // layout lies outside the file.
  static std::unique_ptr<SharedWeights> open(const std::string& path);
  ~SharedWeights();
  SharedWeights(const SharedWeights&) = delete;
  SharedWeights& operator=(const SharedWeights&) = delete;

  // True when `tensors` have exactly this file's names, dtypes and shapes.
  bool matches(const TensorMap& tensors) const;
  // Writes `tensors` (any device) as `version` into slot version % 2. Creator only.
  void write(uint64_t version, const TensorMap& tensors);
  // Calls `use` with read-only views of `version`'s tensors, valid during the call only. Returns
  // true when the slot held `version` from before to after the call, false when it did not hold it
  // or was rewritten meanwhile (what `use` copied is then not one version: read a newer one).
  bool read(uint64_t version, const std::function<void(const TensorMap&)>& use) const;
  // Read-only views of `version`'s slot that stay valid while this object lives, and a token for
  // unchanged(). False when the slot does not hold `version` (complete) now.
  bool views(uint64_t version, TensorMap* out, uint64_t* token) const;
  // True when the slot of `version` has not been written since views() gave `token`: whatever
  // was computed from those views in between saw that one version only.
  bool unchanged(uint64_t version, uint64_t token) const;
  // The newest complete version, if any has been written.
  bool newest(uint64_t* version) const;

  const std::string& path() const { return path_; }
  size_t file_bytes() const { return size_; }

 private:
  struct Entry {
    std::string name;
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t offset, bytes;
  };
  SharedWeights() = default;
  uint64_t* word(size_t byte_offset) const;

  std::string path_;
  bool owner_ = false;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint64_t slot_bytes_ = 0, data_offset_ = 0;
  std::vector<Entry> entries_;
};

}  // namespace keel
