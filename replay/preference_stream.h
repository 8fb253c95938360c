// A shuffled, prefetched stream of preference batches read from a buffer that may not fit in
// memory. Batch k is a pure function of (seed, k): a resumed run sees the batches an uninterrupted
// one would. Order: each epoch permutes blocks of contiguous pairs (one HDF5 range read each), and
// shuffles the pairs of `window_blocks` consecutive permuted blocks together, so memory holds one
// window, not the buffer. A background thread reads ahead `prefetch_batches` batches; asking for
// a batch out of order restarts it there.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "replay/preference_buffer.h"

namespace keel {

struct PreferenceStreamOptions {
  int64_t batch_pairs = 8;
  int64_t block_pairs = 64;    // contiguous pairs read together
  int64_t window_blocks = 64;  // blocks shuffled together (window_blocks * block_pairs pairs in memory)
  int64_t prefetch_batches = 8;
  uint64_t seed = 1;
  int64_t begin = 0, end = -1;  // the buffer's pairs [begin, end) this stream draws from; -1 = to the end
};

class PreferenceStream {
 public:
  PreferenceStream(std::shared_ptr<const PreferenceReader> reader, PreferenceStreamOptions options);
  ~PreferenceStream();
  PreferenceStream(const PreferenceStream&) = delete;
  PreferenceStream& operator=(const PreferenceStream&) = delete;

  // Batch `index` (0-based over the whole run; epochs follow one another). Rethrows read errors.
  std::vector<PreferencePair> batch(int64_t index);
  int64_t pairs() const;  // pairs per epoch

  // The buffer position (relative to `begin`) of the pair at stream position `p`; for tests.
  int64_t position(int64_t p);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel
