// ChunkFetcher: fetches a weights version's safetensors blob in chunks (WeightRequest /
// WeightChunk, contract point 4 of wire/weights/weights.h) on a thread of its own, so that an
// actor on another host keeps generating with the weights it holds while the next version
// crosses the network, and pauses only to bind the finished blob.
//   - want(a) asks for announcement a's version; a newer version wanted while an older one is in
//     flight abandons the older one (the learner serves the newest version only);
//   - ready(v) hands over version v's blob once it arrived whole and its size and checksum hold,
//     newest_ready() the newest that did; wait(v) blocks until the fetch of v ends. A failed fetch
//     (no answer three times, a bad checksum, an error on the thread) ends with no blob: the next
//     want() of that version tries again.
// Each chunk is copied once, from the socket's buffer into its place in one buffer, and hashed
// in the same pass when the chunks before it have arrived (else once they have). Buffers of versions nobody holds any
// more are reused, so that a new version does not fault in and zero half a gigabyte of pages.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "wire/channel.h"
#include "wire/messages.h"

namespace keel {

class ChunkFetcher {
 public:
  ChunkFetcher(const std::string& chunks_endpoint, std::string name);
  ~ChunkFetcher();  // abandons a fetch in flight
  ChunkFetcher(const ChunkFetcher&) = delete;
  ChunkFetcher& operator=(const ChunkFetcher&) = delete;

  // Starts fetching a.policy_version unless it is fetched, in flight, or older than one wanted before.
  void want(const wire::WeightAnnounce& a);
  // Version v's blob, whole and checked, once it has arrived; null before (or after a failed fetch).
  std::shared_ptr<const std::string> ready(uint64_t version);
  // The newest version that arrived whole, with its blob: an actor takes it even when a newer one
  // has been announced since, or it would chase versions it never gets to hold.
  std::optional<std::pair<uint64_t, std::shared_ptr<const std::string>>> newest_ready();
  // ready(v) once the fetch of v has ended (whole, failed, or abandoned for a newer version).
  std::shared_ptr<const std::string> wait(uint64_t version);

  int64_t reused_buffers() const;  // fetches received into an earlier version's buffer

 private:
  struct ChunkedBlob;  // the blob one fetch fills (chunk_fetcher.cc)
  void run();
  std::shared_ptr<std::string> fetch(const wire::WeightAnnounce& a);  // on the fetch thread
  bool abandoned(uint64_t version);                                   // a newer version is wanted, or stopping
  bool take_chunk(const std::vector<std::string_view>& frames, uint64_t version, ChunkedBlob& blob);
  std::shared_ptr<std::string> spare_buffer();

  std::unique_ptr<wire::Channel> dealer_;  // used by the fetch thread only
  std::string name_;
  wire::ReceiveStats stats_;
  std::shared_ptr<std::string> buffers_[2];  // fetch thread only: recent blobs, reused once nobody holds them
  int64_t reused_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::optional<wire::WeightAnnounce> wanted_;       // the newest version asked for
  std::optional<uint64_t> ended_;                    // the version whose fetch ended last, with or without a blob
  std::optional<uint64_t> fetched_;                  // the newest version that arrived whole...
  std::shared_ptr<const std::string> fetched_blob_;  // ...and its blob
  std::thread thread_;
};

}  // namespace keel
