// WeightSender: the learner's side of weight publication (the protocol: wire/weights/weights.h).
// publish() runs on one learner thread at a time (the main thread, or a background checkpoint's
// writer once the checkpoint is on disk): it copies the policy into the shared-memory region
// (wire/weights/region.h) for actors on this host, or, without a region, serialises it at once for
// chunk transfer. The other two calls run on the thread that owns the sockets: announce_if_due()
// sends WeightAnnounce when a version is new and again every second (for actors that join late),
// and serve() answers a WeightRequest with one WeightChunk of the announced version, building the
// safetensors blob from the region on the first request; the chunk's bytes go to the socket from
// the blob without a copy (the message holds the blob until it is sent: a slow receiver with
// chunks queued keeps that version's whole blob, and the next publication builds into fresh
// memory until it is let go). A request for any other version gets no
// reply: the actor hears the newer announcement and asks for that.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "core/safetensors.h"
#include "wire/channel.h"
#include "wire/messages.h"
#include "wire/weights/region.h"
#include "wire/weights/weights.h"

namespace keel {

struct WeightSenderOptions {
  std::string shared_dir = "/dev/shm";  // "" = no shared region; actors fetch chunks
  std::string run_name = "keel";        // names the region: <shared_dir>/<run_name>-<n>.weights
  size_t chunk_bytes = 4u << 20;
};

struct WeightSenderStats {
  uint64_t published_version = 0;
  double publish_seconds = 0;  // last publication: copy into the region (or serialise) + queue the announcement
  int64_t announcements = 0, chunks_served = 0;
  int64_t chunks_from_blob = 0;  // of chunks_served: sent from the blob's memory, not copied into a message
  int64_t blobs_built = 0;       // safetensors blobs built from the region for chunk requests
};

class WeightSender {
 public:
  explicit WeightSender(WeightSenderOptions o);

  // One learner thread at a time (see above). `tensors` are read during the call only. A region that cannot be made (no room
  // in shared memory: kOutOfSpace, a directory that cannot hold it: kIo) is reported once and
  // chunks carry every later version; any other error propagates.
  void publish(uint64_t version, const TensorMap& tensors);

  // Socket thread.
  void announce_if_due(wire::Channel& pub, std::chrono::steady_clock::time_point now);
  void serve(wire::Channel& router, const std::string& peer, const wire::WeightRequest& q);

  WeightSenderStats stats() const;

 private:
  struct Blob {
    std::string bytes;
    uint64_t checksum = 0;
  };
  std::shared_ptr<SharedWeights> write_region(uint64_t version, const TensorMap& tensors);
  // The blob of the announced version (built from the region on first use), or null.
  std::shared_ptr<const Blob> blob_for(uint64_t version);

  WeightSenderOptions o_;
  mutable std::mutex mu_;
  std::shared_ptr<Blob> fresh_blob();       // an empty blob, reusing the spare's memory when free
  std::shared_ptr<const Blob> blob_;        // the announced version's safetensors bytes, once built
  std::shared_ptr<const Blob> spare_blob_;  // the previous version's, for its memory
  std::shared_ptr<SharedWeights> region_;   // same-host weights (null: none)
  bool region_failed_ = false;              // no room for a region: chunks only
  int region_generation_ = 0;
  wire::WeightAnnounce announce_;
  bool announce_pending_ = false, announced_once_ = false;
  std::chrono::steady_clock::time_point last_announce_{};
  WeightSenderStats stats_;
};

}  // namespace keel
