#include "wire/weights/chunk_fetcher.h"

#include <chrono>
#include <cstring>
#include <iostream>
#include <vector>

#include "wire/codec.h"
#include "wire/weights/weights.h"

namespace keel {

// The blob a chunked transfer fills: every chunk is copied once, straight to its place, and the
// chunks that have arrived in order are hashed at once, while they are still in cache and while
// later ones are on the wire (the checksum runs over the blob front to back).
struct ChunkFetcher::ChunkedBlob {
  uint32_t count = 0, received = 0, hashed = 0;       // hashed: chunks [0, hashed) are in `sum`
  uint64_t chunk_bytes = 0, total = 0, checksum = 0;  // chunk_bytes: the size of every chunk but the last
  std::shared_ptr<std::string> bytes;
  std::vector<bool> have;
  WeightsChecksum sum;

  bool started() const { return count > 0; }
  bool whole() const { return started() && received == count; }
  // Chunk 0 fixes the blob's shape; false for a shape no sender makes. `spare` (may be null): a
  // buffer nothing else holds, reused so that its pages are not faulted in and zeroed again.
  bool start(const wire::WeightChunk& c, std::string_view data, std::shared_ptr<std::string> spare) {
    if (c.count == 0 || data.empty() || c.total_bytes == 0) return false;
    const uint64_t len = c.count == 1 ? c.total_bytes : data.size();
    if (c.total_bytes > uint64_t{c.count} * len || c.total_bytes <= uint64_t{c.count - 1} * len) return false;
    try {
      bytes = spare ? std::move(spare) : std::make_shared<std::string>();
      bytes->resize(c.total_bytes);
    } catch (const std::exception& e) {  // a size this process cannot hold: dropped, like any bad message
      std::cerr << "weights v" << c.policy_version << ": no memory for " << c.total_bytes << " bytes (" << e.what() << ")\n";
      bytes.reset();
      return false;
    }
    have.assign(c.count, false);
    count = c.count, chunk_bytes = len, total = c.total_bytes, checksum = c.checksum;
    return true;
  }
  // Copies chunk c into place; false for a chunk of another shape, or one already had.
  bool take(const wire::WeightChunk& c, std::string_view data) {
    if (c.count != count || c.total_bytes != total || c.checksum != checksum || c.index >= count || have[c.index]) return false;
    const uint64_t off = uint64_t{c.index} * chunk_bytes, want = std::min(chunk_bytes, total - off);
    if (data.size() != want) return false;
    // Every chunk but the last is hashed as soon as those before it are (whole words only): the
    // next one in order as it is copied into place, one that came early once the gap is filled.
    const bool next = chunk_bytes % 8 == 0 && c.index == hashed && hashed + 1 < count;
    if (next) {
      sum.add_words_copying(data, bytes->data() + off);
      ++hashed;
    } else {
      std::memcpy(bytes->data() + off, data.data(), want);
    }
    have[c.index] = true;
    ++received;
    if (chunk_bytes % 8 == 0)
      for (; hashed + 1 < count && have[hashed]; ++hashed)
        sum.add_words(std::string_view(bytes->data() + uint64_t{hashed} * chunk_bytes, chunk_bytes));
    return true;
  }
  bool checksum_holds() const {
    if (hashed + 1 != count) return weights_checksum(*bytes) == checksum;  // chunks not of whole words
    const uint64_t off = uint64_t{hashed} * chunk_bytes;
    return sum.finish(std::string_view(bytes->data() + off, total - off)) == checksum;
  }
};

namespace {

constexpr uint32_t kChunksInFlight = 8;  // requests outstanding: not one round trip per chunk
constexpr int kTimeoutMs = 5000;         // no chunk for this long: ask again for the missing ones
constexpr int kAttempts = 3;             // asks in all before the fetch fails
constexpr int kSliceMs = 100;            // how often a wait looks whether the fetch was abandoned

}  // namespace

ChunkFetcher::ChunkFetcher(const std::string& chunks_endpoint, std::string name)
    : dealer_(wire::zmq_connect(wire::SocketKind::kDealer, chunks_endpoint)), name_(std::move(name)) {
  thread_ = std::thread([this] { run(); });
}

ChunkFetcher::~ChunkFetcher() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void ChunkFetcher::want(const wire::WeightAnnounce& a) {
  {
    std::lock_guard<std::mutex> l(mu_);
    const bool retry = ended_ == a.policy_version && fetched_ != a.policy_version;  // that version's fetch failed
    if (wanted_ && (a.policy_version < wanted_->policy_version || (a.policy_version == wanted_->policy_version && !retry)))
      return;
    wanted_ = a;
    if (retry) ended_.reset();
  }
  cv_.notify_all();
}

std::shared_ptr<const std::string> ChunkFetcher::ready(uint64_t version) {
  std::lock_guard<std::mutex> l(mu_);
  return fetched_ == version ? fetched_blob_ : nullptr;
}

std::optional<std::pair<uint64_t, std::shared_ptr<const std::string>>> ChunkFetcher::newest_ready() {
  std::lock_guard<std::mutex> l(mu_);
  if (!fetched_) return std::nullopt;
  return std::make_pair(*fetched_, fetched_blob_);
}

std::shared_ptr<const std::string> ChunkFetcher::wait(uint64_t version) {
  std::unique_lock<std::mutex> l(mu_);
  // Every fetch ends: whole, failed after kAttempts quiet spells, or abandoned for a newer version.
  cv_.wait(l, [&] { return (ended_ && *ended_ >= version) || (wanted_ && wanted_->policy_version > version) || stop_; });
  return fetched_ == version ? fetched_blob_ : nullptr;
}

int64_t ChunkFetcher::reused_buffers() const {
  std::lock_guard<std::mutex> l(mu_);
  return reused_;
}

void ChunkFetcher::run() {
  for (;;) {
    wire::WeightAnnounce a;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stop_ || (wanted_ && (!ended_ || *ended_ < wanted_->policy_version)); });
      if (stop_) return;
      a = *wanted_;
    }
    std::shared_ptr<std::string> blob;
    try {
      blob = fetch(a);
    } catch (const std::exception& e) {  // a socket error, no memory: this fetch fails, the actor goes on
      std::cerr << name_ << ": fetching weights v" << a.policy_version << " failed (" << e.what() << ")\n";
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      if (wanted_->policy_version != a.policy_version) continue;  // abandoned for a newer version
      ended_ = a.policy_version;
      if (blob) fetched_ = a.policy_version, fetched_blob_ = std::move(blob);
    }
    cv_.notify_all();
  }
}

bool ChunkFetcher::abandoned(uint64_t version) {
  std::lock_guard<std::mutex> l(mu_);
  return stop_ || wanted_->policy_version != version;
}

// Chunk 0 says how many chunks there are, the blob's size and its checksum; then up to
// kChunksInFlight requests are outstanding at a time. A chunk missing after a timeout is asked
// for again, up to kAttempts times in all.
std::shared_ptr<std::string> ChunkFetcher::fetch(const wire::WeightAnnounce& a) {
  ChunkedBlob blob;
  uint32_t next = 0, in_flight = 0;
  auto ask = [&](uint32_t chunk) {
    wire::send_message(*dealer_, {name_, wire::WeightRequest{a.policy_version, chunk}});
    ++in_flight;
  };
  auto fill = [&] {  // requests for missing chunks from `next` on, up to the window
    for (; next < blob.count && in_flight < kChunksInFlight; ++next)
      if (!blob.have[next]) ask(next);
  };
  for (int attempt = 0; attempt < kAttempts && !blob.whole(); ++attempt) {
    next = in_flight = 0;
    blob.started() ? fill() : (ask(0), void(next = 1));
    for (int quiet_ms = 0; !blob.whole() && quiet_ms < kTimeoutMs;) {
      if (abandoned(a.policy_version)) return nullptr;
      bool took = false;
      if (!dealer_->recv_lent(kSliceMs, [&](const auto& frames) { took = take_chunk(frames, a.policy_version, blob); })) {
        quiet_ms += kSliceMs;
        continue;
      }
      if (!took) continue;
      quiet_ms = 0;
      if (in_flight > 0) --in_flight;
      fill();
    }
  }
  if (!blob.whole()) return nullptr;
  if (!blob.checksum_holds()) {
    std::cerr << name_ << ": weights v" << a.policy_version << " corrupt (checksum); keeping the current ones\n";
    return nullptr;
  }
  if (buffers_[0] != blob.bytes && buffers_[1] != blob.bytes)
    (buffers_[0].use_count() == 1 || !buffers_[0] ? buffers_[0] : buffers_[1]) = blob.bytes;
  return blob.bytes;
}

// Decodes a message in place and copies the chunk of `version` it carries into `blob`; a message
// that fails validation is counted and dropped, as wire::receive() does.
bool ChunkFetcher::take_chunk(const std::vector<std::string_view>& frames, uint64_t version, ChunkedBlob& blob) {
  bool took = false;
  std::string error;
  const auto use = [&](const wire::WeightChunk& c, std::string_view data) {
    if (c.policy_version != version) return;
    if (!blob.started() && (c.index != 0 || !blob.start(c, data, spare_buffer()))) return;
    took = blob.take(c, data);
  };
  if (wire::decode_weight_chunk(frames, use, &error)) {
    ++stats_.accepted;
  } else {
    ++stats_.rejected;
    std::cerr << name_ << ": dropped a message on the chunks socket (" << error << "); " << stats_.rejected
              << " rejected so far\n";
  }
  return took;
}

// A received buffer that neither a model's parameters nor a finished fetch holds any more.
std::shared_ptr<std::string> ChunkFetcher::spare_buffer() {
  for (auto& b : buffers_)
    if (b && b.use_count() == 1) {
      std::lock_guard<std::mutex> l(mu_);
      ++reused_;
      return b;
    }
  return nullptr;
}

}  // namespace keel
