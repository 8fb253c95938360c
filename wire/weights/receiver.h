// WeightReceiver: an actor's side of weight publication (the protocol: wire/weights/weights.h).
// It hears WeightAnnounce messages and puts the newest announced version into the actor's model:
//   - on the learner's host, a CPU model binds its parameters to the shared-memory slot the
//     announcement names (wire/weights/region.h): no copy at all. The slot is rewritten only
//     when two more versions are published (contract point 3), so after each batch the actor asks
//     unchanged_since_load(); a batch generated across a rewrite is discarded, and from then on
//     the receiver copies each version into the model's own memory instead;
//   - a model on a GPU (or with binding off) copies from the slot once;
//   - on another host, it fetches the safetensors blob in chunks in the background
//     (wire/weights/chunk_fetcher.h) while the model keeps its weights, and once the blob is
//     whole and checked a CPU model takes the buffer's tensors as its parameters (a GPU model
//     copies them).
// A model never generates from parts of two versions.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "wire/weights/chunk_fetcher.h"
#include "wire/weights/region.h"
#include "wire/weights/weights.h"
#include "core/transformer.h"
#include "wire/channel.h"
#include "wire/messages.h"

namespace keel {

class WeightReceiver {
 public:
  // `bind`: let a CPU model use the shared slot's memory as its parameters.
  WeightReceiver(const std::string& weights_endpoint, const std::string& chunks_endpoint, std::string name, bool bind = true);

  // Drains announcements, waiting up to timeout_ms for the first; the newest version heard (0 if none).
  uint64_t poll(int timeout_ms);
  bool has_newer(uint64_t version) const { return have_ && latest_.policy_version > version; }
  const wire::WeightAnnounce& latest() const { return latest_; }

  // Puts the newest announced version into `model`; false (model unchanged) when it could not be
  // had now (retry later). A version that comes in chunks is fetched in the background: with
  // wait_for_chunks the call waits for it; without, it takes the newest version that has arrived
  // whole if that is newer than the model's, and otherwise returns false (the actor generates
  // meanwhile with the weights it has). A model left mixed by a rewritten slot always waits.
  bool load_newest(Transformer& model, uint64_t* version, bool wait_for_chunks = true);

  // False when the model is bound to a slot that was rewritten since load_newest(): what it
  // generated since then must be discarded, and load_newest() called again (which copies).
  bool unchanged_since_load();

  int64_t bound_loads() const { return bound_loads_; }
  int64_t copied_loads() const { return copied_loads_; }
  int64_t chunk_loads() const { return chunk_loads_; }
  int64_t reused_buffers() const { return fetcher_.reused_buffers(); }  // chunk loads into an earlier version's buffer

 private:
  enum class Shared { kLoaded, kUnavailable, kTorn };
  bool open_region(const wire::WeightAnnounce& a);
  bool bind_shared(const wire::WeightAnnounce& a, Transformer& model);
  Shared copy_shared(const wire::WeightAnnounce& a, Transformer& model);
  void own_parameters(Transformer& model);  // before copying into a bound model
  std::unique_ptr<wire::Channel> sub_;
  ChunkFetcher fetcher_;
  std::string name_;
  bool bind_;
  wire::WeightAnnounce latest_;
  bool have_ = false;
  wire::ReceiveStats stats_;
  std::shared_ptr<SharedWeights> region_;        // the region of the newest announcement, if on this host
  std::string unusable_path_;                    // a region that failed to open or load: chunks instead
  std::shared_ptr<SharedWeights> bound_region_;  // the region the parameters point into (null: own memory or a received blob)
  uint64_t bound_version_ = 0, bound_token_ = 0;
  int64_t bound_loads_ = 0, copied_loads_ = 0, chunk_loads_ = 0;
  std::optional<uint64_t> loaded_version_;  // the version last put into the model
};

}  // namespace keel
