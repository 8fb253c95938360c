// The weights path: how a policy version gets from the learner into every actor's model.
// One module, three parts, all in wire/weights/:
//   region.h    SharedWeights, the shared-memory file (two slots, a seqlock each) that carries
//               weights between processes on one host (layout: docs/formats.md)
//   sender.h    WeightSender, the learner's side: writes the region, announces, serves chunks
//   receiver.h  WeightReceiver, the actor's side: hears announcements, loads the newest version
//
// The contract between them:
//   1. The learner publishes version v (once the update that made v is checkpointed) by writing
//      it into slot v % 2 of its region, or, without a region, by serialising it as safetensors.
//   2. It announces v on the weights PUB socket (wire::WeightAnnounce) at once, and again every
//      second, naming the region's path (shared_path) or the blob's size, chunk count and
//      checksum. An announcement may repeat a version with more to say (a restarted learner's
//      new region); a receiver takes the announcement with the highest version, the latest of equals.
//   3. The slot of v is rewritten only when v + 2 is published, so a reader that copies (or binds
//      to) slot v and then finds its sequence counter unchanged holds exactly version v.
//   4. A receiver that cannot read the region (another host, a broken file) asks the chunks
//      ROUTER for (v, chunk i) (wire::WeightRequest); the sender answers with chunk i of the
//      announced version only, so a request for an older version goes unanswered and the
//      receiver follows the newer announcement. The receiver checks total size and checksum.
//   5. A model never generates from parts of two versions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/hash.h"
#include "core/safetensors.h"

namespace keel {

// WeightAnnounce.checksum and WeightChunk.checksum (wire version 3): the serialised weights'
// little-endian 64-bit words dealt into 4 lanes (word i into lane i % 4), each lane an FNV-1a 64
// chain (offset basis, prime 1099511628211, one step per word), the 4 lane values then hashed in
// order by the same step from the offset basis, then the last (size mod 8) bytes byte-wise FNV-1a.
uint64_t weights_checksum(const std::string& bytes);

// The safetensors blob of `tensors` with `metadata` written into `out` (whose memory is reused),
// and its weights_checksum, taken in the same pass over the bytes.
uint64_t weights_blob_into(std::string& out, const TensorMap& tensors, const Metadata& metadata);

// The same checksum taken piece by piece, as the pieces arrive: runs of whole words in order,
// then the last piece, which may end in a partial word.
class WeightsChecksum {
 public:
  void add_words(std::string_view words);  // words.size() % 8 == 0
  // The same, storing the words at `to` in the same pass (a received piece is read once, not
  // copied into place and then read again to hash it).
  void add_words_copying(std::string_view words, char* to);
  uint64_t finish(std::string_view last) const;  // the hash of everything added, then `last`

 private:
  static constexpr size_t kLanes = 4;
  template <bool kStore>
  void add(std::string_view words, char* to);  // kStore: the words are stored at `to` too
  uint64_t lane_[kLanes] = {kFnvOffset, kFnvOffset, kFnvOffset, kFnvOffset};
  uint64_t words_ = 0;  // words added so far: the next one goes into lane words_ % kLanes
};

}  // namespace keel
