// Channels carry whole encoded messages between processes. ZeroMQ behind a small interface,
// with an in-process implementation for tests. Endpoints bind to loopback by default
// (tcp://127.0.0.1:PORT); binding elsewhere is the caller's explicit choice.
// A Channel is used by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "wire/codec.h"
#include "wire/curve.h"

namespace keel::wire {

struct Packet {
  std::string peer;  // routing id of the sender on a ROUTER socket; "" otherwise
  std::string bytes;
};

class Channel {
 public:
  virtual ~Channel() = default;
  // Queues `bytes` (to `peer` on a ROUTER socket). False when it could not be queued within the
  // send timeout (peer gone, queue full): the caller decides whether to retry.
  virtual bool send(const std::string& bytes, const std::string& peer = "") = 0;
  // The same, handing `bytes` over: a socket that can send them without a copy does.
  virtual bool send_owned(std::string&& bytes, const std::string& peer = "") { return send(bytes, peer); }
  // One message of two frames, `head` then `tail` (wire::SplitMessage: the receiver reads their
  // concatenation). A socket that can sends `tail` from where it lies, and `keep` holds that memory
  // until the socket is done with it; another sends the two joined as one frame.
  virtual bool send_split(std::string&& head, std::string_view tail, std::shared_ptr<const void> /*keep*/,
                          const std::string& peer = "") {
    head.append(tail);
    return send(head, peer);
  }
  // Waits up to timeout_ms (0 = poll, -1 = forever) for one message.
  virtual std::optional<Packet> recv(int timeout_ms) = 0;
  // The same, lending the message's frames (one, or the pieces of a split message; a ROUTER's
  // routing id is not among them) to `use` for the call only, where the socket can without
  // copying them out of its own buffers (ZeroMQ: a weight chunk is copied once, into its place).
  // False when nothing arrived.
  virtual bool recv_lent(int timeout_ms, const std::function<void(const std::vector<std::string_view>& frames)>& use) {
    auto p = recv(timeout_ms);
    if (p) use({p->bytes});
    return p.has_value();
  }
};

enum class SocketKind { kPush, kPull, kPub, kSub, kDealer, kRouter };

struct SocketOptions {
  int send_timeout_ms = 2000;
  int high_water_mark = 1000;               // messages queued per peer
  int64_t max_message_bytes = 256ll << 20;  // larger incoming messages drop the connection (ZMQ_MAXMSGSIZE)
  // This socket's keys instead of the process-wide transport_security() (a process talking to
  // servers with different keys; tests playing several peers).
  std::optional<TransportSecurity> security;
};

std::unique_ptr<Channel> zmq_bind(SocketKind kind, const std::string& endpoint, const SocketOptions& o = {});
std::unique_ptr<Channel> zmq_connect(SocketKind kind, const std::string& endpoint, const SocketOptions& o = {});

// Two connected in-process channels: what one sends the other receives (peer "inproc").
std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>> inproc_pair();

// Counts of what a receiver accepted and dropped.
struct ReceiveStats {
  int64_t accepted = 0;
  int64_t rejected = 0;
  std::string last_error;
};

// Receives and decodes one message; a message that fails validation is counted in `stats`,
// logged, and dropped (the call then returns nothing). `peer` receives the sender's routing id.
std::optional<Message> receive(Channel& ch, int timeout_ms, ReceiveStats& stats, std::string* peer = nullptr,
                               const DecodeLimits& limits = {});

bool send_message(Channel& ch, const Message& m, const std::string& peer = "");

}  // namespace keel::wire
