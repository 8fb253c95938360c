// The HDF5 preference buffer: pairs (prompt, chosen, rejected) as flat token arrays with offsets,
// so other tools write and read it with h5py and nothing else, and keel streams buffers larger
// than memory. Format version 1 (docs/formats.md has an h5py example):
//
//   root attributes   format = "keel-preferences" (string), format_version = 1 (integer),
//                     tokenizer = the tokenizer's identity (string; "" when unknown)
//   /prompt/tokens    int32 [total]     /prompt/offsets    int64 [N+1], offsets[0] = 0
//   /chosen/tokens    int32 [total]     /chosen/offsets    int64 [N+1]
//   /rejected/tokens  int32 [total]     /rejected/offsets  int64 [N+1]
//     pair i: prompt = /prompt/tokens[offsets[i]:offsets[i+1]], likewise chosen and rejected.
//     The prompt holds BOS and the rendered template; chosen/rejected end with EOS when complete.
//   optional text     /prompt/text, /chosen/text, /rejected/text  uint8 [bytes] (UTF-8) with
//                     /prompt/text_offsets ... int64 [N+1]
//   optional metadata /meta/chosen_reward, /meta/rejected_reward  float32 [N] (NaN = unknown)
//                     /meta/policy_version int64 [N] (-1 = unknown)
//                     /meta/source uint8 [bytes] + /meta/source_offsets int64 [N+1]
//   optional cache    /ref/chosen_logprob, /ref/rejected_logprob  float32 [N]: summed reference
//                     log-probs of each response, with attributes model (identity of the
//                     reference weights) and max_len (the truncation they were computed with).
//
// All datasets are one-dimensional and chunked; readers accept any integer or float width
// (h5py's default int64 token arrays load as is). Integer offsets are validated on open (N+1
// entries from 0, non-decreasing, the last equal to the length of the array they index); token
// ids are checked against the vocabulary by users.
//
// Errors are KeelErrors of kind kIo (a file that is absent or cannot be opened, created, written
// or renamed), kOutOfSpace (a write that found the disk full) or kCorruptData (a file that is not
// a preference buffer of this version, or whose datasets disagree).
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace keel {

constexpr int kPreferenceFormatVersion = 1;

struct PreferencePair {
  std::vector<int32_t> prompt, chosen, rejected;
  std::string prompt_text, chosen_text, rejected_text;  // stored when the buffer has text
  std::string source;                                   // stored when the buffer has metadata
  float chosen_reward = NAN, rejected_reward = NAN;
  int64_t policy_version = -1;
  float ref_chosen = NAN, ref_rejected = NAN;  // filled when the buffer caches them
};

struct PreferenceContents {
  bool text = false;
  bool meta = false;
};

// Writes a new buffer. With `atomic` the data goes to `path`.tmp and is renamed into place by
// finish(), so a crash never leaves a half-written buffer under the final name; without it the
// file is written in place and flushed after every append (a live buffer another process reads).
class PreferenceWriter {
 public:
  PreferenceWriter(const std::string& path, const std::string& tokenizer_identity, PreferenceContents contents,
                   bool atomic = true);
  ~PreferenceWriter();  // an unfinished atomic writer removes its temporary file
  void append(const PreferencePair& pair);
  void finish();
  int64_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct PreferenceInfo {
  int64_t pairs = 0;
  std::string tokenizer;
  bool text = false, meta = false, ref = false;
  std::string ref_model;
  int64_t ref_max_len = 0;
};

// Random access to a buffer. Offsets are held in memory (24 bytes per pair); tokens and text are
// read on demand with one HDF5 range read per dataset per call, so a buffer may exceed RAM.
class PreferenceReader {
 public:
  explicit PreferenceReader(const std::string& path);  // validates the layout; KeelError names the problem
  ~PreferenceReader();
  const PreferenceInfo& info() const;
  int64_t size() const;
  // Pairs [begin, end), in order.
  std::vector<PreferencePair> read(int64_t begin, int64_t end) const;
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Stores (or replaces) the cached reference log-probs of every pair of an existing buffer.
void write_reference_logprobs(const std::string& path, const std::vector<float>& chosen, const std::vector<float>& rejected,
                              const std::string& ref_model, int64_t max_len);

}  // namespace keel
