#include "wire/weights/sender.h"

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/hash.h"

namespace keel {

// Word i of the blob goes into lane i % kLanes: independent multiply chains, where one chain is
// bound by the multiply's latency, not by memory. Each step is a bijection of its lane for a fixed
// word, and finish() folds the lanes in with the same bijective step, so any single changed word
// (or byte) changes the result.
void WeightsChecksum::add_words(std::string_view words) { add<false>(words, nullptr); }

void WeightsChecksum::add_words_copying(std::string_view words, char* to) { add<true>(words, to); }

template <bool kStore>
void WeightsChecksum::add(std::string_view words, char* to) {
  KEEL_CHECK(words.size() % 8 == 0, "weights checksum: a piece of " << words.size() << " bytes is not whole words");
  const char* p = words.data();
  size_t n = words.size() / 8;
  auto word = [&](size_t i) {  // word i, stored at `to` on the way when asked
    uint64_t w;
    std::memcpy(&w, p + 8 * i, sizeof w);
    if constexpr (kStore) std::memcpy(to + 8 * i, &w, sizeof w);
    return w;
  };
  auto step = [&](uint64_t w) {  // one word into its lane, outside the four-lane rounds
    uint64_t& lane = lane_[words_++ % kLanes];
    lane = (lane ^ w) * kFnvPrime;
  };
  size_t i = 0;
  for (; i < n && words_ % kLanes != 0; ++i) step(word(i));
  static_assert(kLanes == 4, "the loop below runs four lanes");
  const size_t rounds_from = i;  // unless i == n, words_ % kLanes == 0 here: word i goes into lane 0
  uint64_t a = lane_[0], b = lane_[1], c = lane_[2], d = lane_[3];
  for (; i + kLanes <= n; i += kLanes) {
    a = (a ^ word(i)) * kFnvPrime;
    b = (b ^ word(i + 1)) * kFnvPrime;
    c = (c ^ word(i + 2)) * kFnvPrime;
    d = (d ^ word(i + 3)) * kFnvPrime;
  }
  lane_[0] = a, lane_[1] = b, lane_[2] = c, lane_[3] = d;
  words_ += i - rounds_from;
  for (; i < n; ++i) step(word(i));
}

uint64_t WeightsChecksum::finish(std::string_view last) const {
  WeightsChecksum c = *this;
  const size_t whole = last.size() / 8 * 8;
  c.add_words(last.substr(0, whole));
  uint64_t h = kFnvOffset;
  for (uint64_t l : c.lane_) h = (h ^ l) * kFnvPrime;
  return fnv1a64(last.substr(whole), h);
}

uint64_t weights_checksum(const std::string& bytes) { return WeightsChecksum().finish(bytes); }

// Pieces end anywhere (a tensor of 3 floats), so a partial word waits in `carry` for the next.
uint64_t weights_blob_into(std::string& out, const TensorMap& tensors, const Metadata& metadata) {
  const auto pieces = safetensors_pieces(tensors, metadata);
  out.resize(pieces.total_bytes());
  WeightsChecksum sum;
  char carry[8];
  size_t carried = 0, at = 0;
  for (size_t i = 0; i < pieces.count(); ++i) {
    std::string_view p = pieces.piece(i);
    for (; carried > 0 && carried < 8 && !p.empty(); p.remove_prefix(1)) out[at++] = carry[carried++] = p.front();
    if (carried == 8) {
      sum.add_words(std::string_view(carry, 8));
      carried = 0;
    }
    if (carried > 0) continue;  // the piece ended inside the carried word
    const size_t whole = p.size() / 8 * 8;
    sum.add_words_copying(p.substr(0, whole), out.data() + at);
    at += whole;
    for (char c : p.substr(whole)) out[at++] = carry[carried++] = c;
  }
  return sum.finish(std::string_view(carry, carried));
}

namespace {

// Removes <dir>/keel-<pid>-<n>.weights regions whose learner process is gone (killed learners
// cannot remove their own).
void remove_dead_regions(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    long pid = 0;
    int gen = 0;
    char tail[16] = {0};
    if (std::sscanf(name.c_str(), "keel-%ld-%d.%15s", &pid, &gen, tail) != 3 || std::string(tail) != "weights" || pid <= 0)
      continue;
    if (::kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH) {
      std::filesystem::remove(e.path(), ec);
      if (!ec) std::cerr << "learner: removed " << e.path().string() << ", left by a learner that is gone\n";
    }
  }
}

uint64_t blob_bytes(std::string& out, const TensorMap& tensors, uint64_t version) {
  return weights_blob_into(out, tensors, {{"policy_version", std::to_string(version)}});
}

}  // namespace

WeightSender::WeightSender(WeightSenderOptions o) : o_(std::move(o)) {}

WeightSenderStats WeightSender::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

std::shared_ptr<SharedWeights> WeightSender::write_region(uint64_t version, const TensorMap& tensors) {
  std::shared_ptr<SharedWeights> region;
  {
    std::lock_guard<std::mutex> l(mu_);
    region = region_;
  }
  if (o_.shared_dir.empty() || region_failed_) return nullptr;
  try {
    if (!region || !region->matches(tensors)) {
      remove_dead_regions(o_.shared_dir);
      region = SharedWeights::create(o_.shared_dir + "/" + o_.run_name + "-" + std::to_string(region_generation_++) + ".weights",
                                     tensors);
      std::cerr << "learner: weights for same-host actors in " << region->path() << " (" << region->file_bytes() / (1 << 20)
                << " MiB)\n";
    }
    region->write(version, tensors);
    return region;
  } catch (const KeelError& e) {
    // No room in shared memory, or a directory that cannot hold the region: chunks still work.
    // Anything else (tensors that do not fit the region's layout) is a bug and stops the learner.
    if (e.kind() != ErrorKind::kOutOfSpace && e.kind() != ErrorKind::kIo) throw;
    std::cerr << "learner: " << e.what() << "; actors will fetch weights in chunks instead\n";
    region_failed_ = true;
    return nullptr;
  }
}

void WeightSender::publish(uint64_t version, const TensorMap& tensors) {
  const auto t0 = std::chrono::steady_clock::now();
  auto region = write_region(version, tensors);
  wire::WeightAnnounce a;
  a.policy_version = version;
  std::shared_ptr<const Blob> blob;
  if (region) {
    a.shared_path = region->path();
  } else {
    auto b = fresh_blob();
    b->checksum = blob_bytes(b->bytes, tensors, version);
    a.total_bytes = b->bytes.size();
    a.chunk_count = static_cast<uint32_t>((b->bytes.size() + o_.chunk_bytes - 1) / o_.chunk_bytes);
    a.checksum = b->checksum;
    blob = b;
  }
  std::lock_guard<std::mutex> l(mu_);
  region_ = region;
  spare_blob_ = std::move(blob_);
  blob_ = blob;
  announce_ = a;
  announce_pending_ = true;
  announced_once_ = true;
  stats_.published_version = version;
  stats_.publish_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void WeightSender::announce_if_due(wire::Channel& pub, std::chrono::steady_clock::time_point now) {
  wire::WeightAnnounce a;
  {
    std::lock_guard<std::mutex> l(mu_);
    const bool due = announce_pending_ || (announced_once_ && now - last_announce_ > std::chrono::seconds(1));
    if (!due) return;
    a = announce_;
    announce_pending_ = false;
    last_announce_ = now;
    ++stats_.announcements;
  }
  wire::send_message(pub, {"learner", a});
}

std::shared_ptr<WeightSender::Blob> WeightSender::fresh_blob() {
  std::shared_ptr<const Blob> spare;
  {
    std::lock_guard<std::mutex> l(mu_);
    spare = std::move(spare_blob_);
  }
  // The previous version's blob, once no chunk reply holds it: its pages are mapped already, where
  // a new 500 MB string is faulted in and zeroed page by page.
  if (spare && spare.use_count() == 1) {
    // The last other holder may have been a chunk frame freed on ZeroMQ's I/O thread: its reads of
    // the blob happen before the writes about to reuse it (use_count() is a relaxed load).
    std::atomic_thread_fence(std::memory_order_acquire);
    return std::const_pointer_cast<Blob>(spare);
  }
  return std::make_shared<Blob>();
}

std::shared_ptr<const WeightSender::Blob> WeightSender::blob_for(uint64_t version) {
  std::shared_ptr<const Blob> blob;
  std::shared_ptr<SharedWeights> region;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!announced_once_ || announce_.policy_version != version) return nullptr;
    blob = blob_;
    region = region_;
  }
  if (blob || !region) return blob;
  auto b = fresh_blob();
  if (!region->read(version, [&](const TensorMap& t) { b->checksum = blob_bytes(b->bytes, t, version); }))
    return nullptr;  // rewritten: a newer one is announced
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.blobs_built;
  if (announce_.policy_version == version) blob_ = b;
  return b;
}

void WeightSender::serve(wire::Channel& router, const std::string& peer, const wire::WeightRequest& q) {
  auto blob = blob_for(q.policy_version);
  if (!blob) return;
  const auto count = static_cast<uint32_t>((blob->bytes.size() + o_.chunk_bytes - 1) / o_.chunk_bytes);
  if (q.chunk >= count) return;
  const size_t off = static_cast<size_t>(q.chunk) * o_.chunk_bytes;
  const wire::WeightChunk header{q.policy_version, q.chunk, count, {}, blob->bytes.size(), blob->checksum};
  // The chunk's bytes go to the socket from the blob itself, which the message holds until sent;
  // a chunk that cannot be a segment of its own (the last, of a partial word) is copied once.
  const auto data = std::string_view(blob->bytes).substr(off, o_.chunk_bytes);
  auto split = wire::encode_weight_chunk_split("learner", header, data);
  if (split)
    router.send_split(std::move(split->head), split->tail, blob, peer);
  else
    router.send_owned(wire::encode_weight_chunk("learner", header, data), peer);
  std::lock_guard<std::mutex> l(mu_);
  ++stats_.chunks_served;
  if (split) ++stats_.chunks_from_blob;
}

}  // namespace keel
