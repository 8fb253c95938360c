#include "actors/credit_client.h"

#include <chrono>

namespace keel {

CreditClient::CreditClient(const std::string& endpoint, std::string name)
    : dealer_(wire::zmq_connect(wire::SocketKind::kDealer, endpoint)), name_(std::move(name)) {}

std::optional<wire::CreditGrant> CreditClient::ask(uint64_t version, uint32_t rollouts, int timeout_ms) {
  const uint64_t id = ++next_request_;
  wire::send_message(*dealer_, {name_, wire::CreditRequest{id, version, rollouts}});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = wire::receive(*dealer_, 50, stats_);
    if (!m) continue;
    // Answers to earlier requests that timed out are passed over.
    if (auto* g = std::get_if<wire::CreditGrant>(&m->body); g && g->request_id == id) return *g;
  }
  return std::nullopt;
}

}  // namespace keel
