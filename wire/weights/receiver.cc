#include "wire/weights/receiver.h"

#include <unistd.h>

#include <cstring>
#include <iostream>

#include "core/checkpoint.h"
#include "core/error.h"
#include "core/safetensors.h"

namespace keel {

WeightReceiver::WeightReceiver(const std::string& weights_endpoint, const std::string& chunks_endpoint, std::string name,
                               bool bind)
    : sub_(wire::zmq_connect(wire::SocketKind::kSub, weights_endpoint)),
      dealer_(wire::zmq_connect(wire::SocketKind::kDealer, chunks_endpoint)), name_(std::move(name)), bind_(bind) {}

uint64_t WeightReceiver::poll(int timeout_ms) {
  while (auto m = wire::receive(*sub_, timeout_ms, stats_)) {
    if (auto* a = std::get_if<wire::WeightAnnounce>(&m->body))
      // The same version may be announced again with more to say (a restarted learner's region).
      if (!have_ || a->policy_version >= latest_.policy_version) {
        latest_ = *a;
        have_ = true;
      }
    timeout_ms = 0;
  }
  return have_ ? latest_.policy_version : 0;
}

namespace {
bool is_region_fault(const KeelError& e) {
  return e.kind() == ErrorKind::kIo || e.kind() == ErrorKind::kCorruptData || e.kind() == ErrorKind::kOutOfSpace;
}
}  // namespace

bool WeightReceiver::open_region(const wire::WeightAnnounce& a) {
  if (a.shared_path.empty()) return false;
  if (region_ && region_->path() == a.shared_path) return true;
  region_.reset();
  if (a.shared_path == unusable_path_ || ::access(a.shared_path.c_str(), R_OK) != 0) return false;  // broken, or another host's
  try {
    region_ = SharedWeights::open(a.shared_path);
    return true;
  } catch (const KeelError& e) {
    // A region that cannot be read here (I/O, a damaged file, no memory to map it) leaves the
    // chunks; anything else is a bug and stops the actor.
    if (!is_region_fault(e)) throw;
    std::cerr << name_ << ": shared weights " << a.shared_path << " unusable (" << e.what() << "); fetching chunks\n";
    unusable_path_ = a.shared_path;
    return false;
  }
}

bool WeightReceiver::bind_shared(const wire::WeightAnnounce& a, Transformer& model) {
  TensorMap views;
  uint64_t token = 0;
  if (!region_->views(a.policy_version, &views, &token) || !bind_weights(model, views)) return false;
  bound_region_ = region_;  // keeps the old mapping alive until now, the new one from now on
  bound_version_ = a.policy_version;
  bound_token_ = token;
  return true;
}

void WeightReceiver::own_parameters(Transformer& model) {
  if (!bound_region_) return;
  torch::NoGradGuard ng;
  for (auto& p : model->parameters()) p.set_data(p.clone());
  bound_region_.reset();
}

WeightReceiver::Shared WeightReceiver::copy_shared(const wire::WeightAnnounce& a, Transformer& model) {
  own_parameters(model);
  bool copied = false;
  try {
    const bool whole = region_->read(a.policy_version, [&](const TensorMap& t) {
      copied = true;
      load_weights(model, t, "weights v" + std::to_string(a.policy_version), /*allow_new_heads=*/true);
    });
    if (whole) return Shared::kLoaded;
  } catch (const KeelError& e) {
    if (!is_region_fault(e)) throw;  // e.g. the region's tensors do not fit the model: chunks would not either
    std::cerr << name_ << ": shared weights v" << a.policy_version << " do not load (" << e.what() << "); fetching chunks\n";
    unusable_path_ = a.shared_path;
    region_.reset();
  }
  return copied ? Shared::kTorn : Shared::kUnavailable;
}

bool WeightReceiver::unchanged_since_load() {
  if (!bound_region_ || bound_region_->unchanged(bound_version_, bound_token_)) return true;
  std::cerr << name_ << ": the learner rewrote weights v" << bound_version_
            << " while they were in use; discarding that batch and copying weights from now on\n";
  bind_ = false;
  bound_token_ = ~uint64_t{0};  // stays "changed" until the next load
  return false;
}

bool WeightReceiver::load_newest(Transformer& model, uint64_t* version) {
  // A torn copy (the learner rewrote the slot while we copied) or a discarded bound batch leaves
  // the model mixed, so keep going until one version is in it whole.
  bool mixed = bound_region_ && !bound_region_->unchanged(bound_version_, bound_token_);
  for (int attempt = 0; attempt < 100; ++attempt) {
    const auto a = latest_;
    if (open_region(a)) {
      if (bind_ && model->device().is_cpu() && bind_shared(a, model)) {
        ++bound_loads_;
        *version = a.policy_version;
        return true;
      }
      const auto r = copy_shared(a, model);
      if (r == Shared::kLoaded) {
        ++copied_loads_;
        *version = a.policy_version;
        return true;
      }
      if (region_) {
        // Torn, or the slot already holds a later version: that version's announcement is on its
        // way (the learner serves chunks of the newest version only, so do not ask for these).
        mixed = mixed || r == Shared::kTorn;
        poll(20);
        continue;
      }
    }
    if (auto blob = fetch_chunks(a)) {
      const std::string origin = "weights v" + std::to_string(a.policy_version);
      const auto views = safetensors_views(blob, origin);
      // A CPU model takes the received tensors as its parameters (nobody rewrites them): no copy.
      if (model->device().is_cpu() && bind_weights(model, views)) {
        bound_region_.reset();
      } else {
        own_parameters(model);
        load_weights(model, views, origin, /*allow_new_heads=*/true);
      }
      ++chunk_loads_;
      *version = a.policy_version;
      return true;
    }
    if (!mixed) return false;
    poll(200);
  }
  KEEL_CHECK(!mixed, name_ << ": could not load one whole weights version after a torn copy");
  return false;  // the region holds no announced version yet: try again before the next batch
}

namespace {

// The blob a chunked transfer fills: every chunk is copied once, straight to its place.
struct ChunkedBlob {
  uint32_t count = 0, received = 0;
  uint64_t chunk_bytes = 0, total = 0, checksum = 0;  // chunk_bytes: the size of every chunk but the last
  std::shared_ptr<std::string> bytes;
  std::vector<bool> have;

  bool started() const { return count > 0; }
  // Chunk 0 fixes the blob's shape; false for a shape no sender makes. `spare` (may be null): a
  // buffer nothing else holds, reused so that its pages are not faulted in and zeroed again for every version.
  bool start(const wire::WeightChunk& c, std::shared_ptr<std::string> spare) {
    if (c.count == 0 || c.data.empty() || c.total_bytes == 0) return false;
    const uint64_t len = c.count == 1 ? c.total_bytes : c.data.size();
    if (c.total_bytes > uint64_t{c.count} * len || c.total_bytes <= uint64_t{c.count - 1} * len) return false;
    try {
      bytes = spare ? std::move(spare) : std::make_shared<std::string>();
      bytes->resize(c.total_bytes);
    } catch (const std::exception& e) {  // a size this process cannot hold: dropped, like any bad message
      std::cerr << "weights v" << c.policy_version << ": no memory for " << c.total_bytes << " bytes (" << e.what() << ")\n";
      bytes.reset();
      return false;
    }
    count = c.count, chunk_bytes = len, total = c.total_bytes, checksum = c.checksum;
    have.assign(count, false);
    return true;
  }
  // Copies chunk c into place; false for a chunk of another shape, or one already had.
  bool take(const wire::WeightChunk& c) {
    if (c.count != count || c.total_bytes != total || c.checksum != checksum || c.index >= count || have[c.index]) return false;
    const uint64_t off = uint64_t{c.index} * chunk_bytes, want = std::min(chunk_bytes, total - off);
    if (c.data.size() != want) return false;
    std::memcpy(bytes->data() + off, c.data.data(), want);
    have[c.index] = true;
    ++received;
    return true;
  }
};

}  // namespace

// Chunk 0 says how many chunks there are, the blob's size and its checksum; then up to
// kChunksInFlight requests are outstanding at a time, so the transfer is not one round trip per
// chunk. A chunk missing after a timeout is asked for again, up to three times in all.
std::shared_ptr<const std::string> WeightReceiver::fetch_chunks(const wire::WeightAnnounce& a) {
  constexpr uint32_t kChunksInFlight = 8;
  constexpr int kTimeoutMs = 5000, kAttempts = 3;
  ChunkedBlob blob;
  uint32_t next = 0, in_flight = 0;
  auto fill = [&] {  // requests for missing chunks from `next` on, up to the window
    for (; next < blob.count && in_flight < kChunksInFlight; ++next)
      if (!blob.have[next]) {
        wire::send_message(*dealer_, {name_, wire::WeightRequest{a.policy_version, next}});
        ++in_flight;
      }
  };
  for (int attempt = 0; attempt < kAttempts && (!blob.started() || blob.received < blob.count); ++attempt) {
    next = 0;
    in_flight = 0;
    if (!blob.started()) {
      wire::send_message(*dealer_, {name_, wire::WeightRequest{a.policy_version, 0}});
      in_flight = next = 1;
    } else {
      fill();
    }
    while (!blob.started() || blob.received < blob.count) {
      auto m = wire::receive(*dealer_, kTimeoutMs, stats_);
      if (!m) break;  // a lost request or chunk: the next attempt asks again
      auto* c = std::get_if<wire::WeightChunk>(&m->body);
      if (!c || c->policy_version != a.policy_version) continue;
      if (!blob.started() && (c->index != 0 || !blob.start(*c, spare_blob()))) continue;
      if (!blob.take(*c)) continue;
      if (in_flight > 0) --in_flight;
      fill();
    }
  }
  if (!blob.started() || blob.received < blob.count) return nullptr;
  if (weights_checksum(*blob.bytes) != blob.checksum) {
    std::cerr << name_ << ": weights v" << a.policy_version << " corrupt (checksum); keeping the current ones\n";
    return nullptr;
  }
  if (blobs_[0] != blob.bytes && blobs_[1] != blob.bytes)
    (blobs_[0].use_count() == 1 || !blobs_[0] ? blobs_[0] : blobs_[1]) = blob.bytes;
  return blob.bytes;
}

std::shared_ptr<std::string> WeightReceiver::spare_blob() {
  for (auto& b : blobs_)
    if (b && b.use_count() == 1) {  // neither the model's parameters nor a load hold it
      ++reused_buffers_;
      return b;
    }
  return nullptr;
}

}  // namespace keel
