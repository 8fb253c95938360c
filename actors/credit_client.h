// An actor's side of flow control (learner/rollout_credits.h): before each batch it asks the
// learner for a credit on the learner's ROUTER socket and waits for the answer. Owns one DEALER
// socket; not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "wire/channel.h"
#include "wire/messages.h"

namespace keel {

class CreditClient {
 public:
  CreditClient(const std::string& endpoint, std::string name);
  // Asks for leave to generate one batch of `rollouts` with weights `version`; the learner's answer,
  // or nullopt when none came within timeout_ms (the learner is away or restarting: ask again).
  std::optional<wire::CreditGrant> ask(uint64_t version, uint32_t rollouts, int timeout_ms);

 private:
  std::unique_ptr<wire::Channel> dealer_;
  std::string name_;
  uint64_t next_request_ = 0;
  wire::ReceiveStats stats_;
};

}  // namespace keel
