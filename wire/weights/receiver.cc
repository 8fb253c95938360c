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
    : sub_(wire::zmq_connect(wire::SocketKind::kSub, weights_endpoint)), fetcher_(chunks_endpoint, name), name_(std::move(name)),
      bind_(bind) {}

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

bool WeightReceiver::load_newest(Transformer& model, uint64_t* version, bool wait_for_chunks) {
  // A torn copy (the learner rewrote the slot while we copied) or a discarded bound batch leaves
  // the model mixed, so keep going until one version is in it whole.
  bool mixed = bound_region_ && !bound_region_->unchanged(bound_version_, bound_token_);
  const auto loaded = [&](uint64_t v) {
    *version = v;
    loaded_version_ = v;
    return true;
  };
  for (int attempt = 0; attempt < 100; ++attempt) {
    const auto a = latest_;
    if (open_region(a)) {
      if (bind_ && model->device().is_cpu() && bind_shared(a, model)) {
        ++bound_loads_;
        return loaded(a.policy_version);
      }
      const auto r = copy_shared(a, model);
      if (r == Shared::kLoaded) {
        ++copied_loads_;
        return loaded(a.policy_version);
      }
      if (region_) {
        // Torn, or the slot already holds a later version: that version's announcement is on its
        // way (the learner serves chunks of the newest version only, so do not ask for these).
        mixed = mixed || r == Shared::kTorn;
        poll(20);
        continue;
      }
    }
    fetcher_.want(a);
    // A mixed model cannot generate: it waits for the chunks whatever the caller asked.
    auto blob = wait_for_chunks || mixed ? fetcher_.wait(a.policy_version) : fetcher_.ready(a.policy_version);
    auto v = a.policy_version;
    if (!blob && !wait_for_chunks && !mixed)
      if (auto got = fetcher_.newest_ready(); got && (!loaded_version_ || got->first > *loaded_version_)) {
        v = got->first;  // newer than the model's, older than the newest announced: take it meanwhile
        blob = got->second;
      }
    if (blob) {
      const std::string origin = "weights v" + std::to_string(v);
      const auto views = safetensors_views(blob, origin);
      // A CPU model takes the received tensors as its parameters (nobody rewrites them): no copy.
      if (model->device().is_cpu() && bind_weights(model, views)) {
        bound_region_.reset();
      } else {
        own_parameters(model);
        load_weights(model, views, origin, /*allow_new_heads=*/true);
      }
      ++chunk_loads_;
      return loaded(v);
    }
    if (!mixed) return false;
    poll(200);
  }
  KEEL_CHECK(!mixed, name_ << ": could not load one whole weights version after a torn copy");
  return false;  // the region holds no announced version yet: try again before the next batch
}

}  // namespace keel
