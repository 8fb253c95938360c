#include "wire/channel.h"

#include <cerrno>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <zmq.hpp>

#include "core/error.h"
#include "wire/curve.h"
#include "wire/zap_handler.h"

namespace keel::wire {

namespace {

zmq::context_t& context() {
  static zmq::context_t ctx(1);
  return ctx;
}

int zmq_type(SocketKind k) {
  switch (k) {
    case SocketKind::kPush:
      return ZMQ_PUSH;
    case SocketKind::kPull:
      return ZMQ_PULL;
    case SocketKind::kPub:
      return ZMQ_PUB;
    case SocketKind::kSub:
      return ZMQ_SUB;
    case SocketKind::kDealer:
      return ZMQ_DEALER;
    case SocketKind::kRouter:
      return ZMQ_ROUTER;
  }
  return ZMQ_PAIR;
}

class ZmqChannel : public Channel {
 public:
  ZmqChannel(SocketKind kind, const std::string& endpoint, bool bind, const SocketOptions& o)
      : kind_(kind), socket_(context(), zmq_type(kind)) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndtimeo, o.send_timeout_ms);
    socket_.set(zmq::sockopt::sndhwm, o.high_water_mark);
    socket_.set(zmq::sockopt::rcvhwm, o.high_water_mark);
    socket_.set(zmq::sockopt::maxmsgsize, o.max_message_bytes);
    if (kind == SocketKind::kSub) socket_.set(zmq::sockopt::subscribe, "");
    if (kind == SocketKind::kRouter) socket_.set(zmq::sockopt::router_mandatory, 1);
    if (kind == SocketKind::kDealer || kind == SocketKind::kPush) socket_.set(zmq::sockopt::immediate, 1);
    secure(endpoint, bind, o.security ? *o.security : transport_security());
    try {
      bind ? socket_.bind(endpoint) : socket_.connect(endpoint);
    } catch (const zmq::error_t& e) {
      KEEL_FAIL((bind ? "cannot bind " : "cannot connect ") << endpoint << ": " << e.what());
    }
  }

  // The transport policy of wire/curve.h, applied before the socket binds or connects.
  void secure(const std::string& endpoint, bool bind, const TransportSecurity& sec) {
    if (bind && !sec.curve())
      KEEL_CHECK(is_local_endpoint(endpoint), "refusing to bind " << endpoint
                                                                  << " in clear: an address beyond loopback needs CURVE keys "
                                                                     "(keel keys generate; then --curve-key and --curve-allow)");
    if (!sec.curve() || endpoint.rfind("tcp://", 0) != 0) return;
    if (bind) {
      KEEL_CHECK(!sec.allowed.empty(), "binding " << endpoint << " with CURVE needs the client keys it admits (--curve-allow)");
      socket_.set(zmq::sockopt::zap_domain, detail::register_zap_domain(context(), sec.allowed));
      socket_.set(zmq::sockopt::curve_server, 1);
      socket_.set(zmq::sockopt::curve_secretkey, sec.own.secret_key);
    } else {
      KEEL_CHECK(!sec.server_public_key.empty(),
                 "connecting to " << endpoint << " with CURVE needs the server's public key (--curve-server-key)");
      socket_.set(zmq::sockopt::curve_serverkey, sec.server_public_key);
      socket_.set(zmq::sockopt::curve_publickey, sec.own.public_key);
      socket_.set(zmq::sockopt::curve_secretkey, sec.own.secret_key);
    }
  }

  bool send(const std::string& bytes, const std::string& peer) override {
    try {
      if (kind_ == SocketKind::kRouter) {
        if (!socket_.send(zmq::buffer(peer), zmq::send_flags::sndmore)) return false;
      }
      return socket_.send(zmq::buffer(bytes), zmq::send_flags::none).has_value();
    } catch (const zmq::error_t&) {
      return false;  // e.g. EHOSTUNREACH: the peer of a ROUTER reply is gone
    }
  }

  // ZeroMQ takes the string and frees it once sent (large weight chunks: no copy into the socket).
  bool send_owned(std::string&& bytes, const std::string& peer) override {
    auto* owned = new std::string(std::move(bytes));
    zmq::message_t msg(
        owned->data(), owned->size(), [](void*, void* hint) { delete static_cast<std::string*>(hint); }, owned);
    try {
      if (kind_ == SocketKind::kRouter) {
        if (!socket_.send(zmq::buffer(peer), zmq::send_flags::sndmore)) return false;
      }
      return socket_.send(msg, zmq::send_flags::none).has_value();
    } catch (const zmq::error_t&) {
      return false;
    }
  }

  // The tail is sent from where it lies: ZeroMQ frees the frame (and so lets go of `keep`) once sent.
  bool send_split(std::string&& head, std::string_view tail, std::shared_ptr<const void> keep, const std::string& peer) override {
    auto held = std::make_unique<std::shared_ptr<const void>>(std::move(keep));
    try {
      zmq::message_t tail_msg(
          const_cast<char*>(tail.data()), tail.size(),
          [](void*, void* hint) { delete static_cast<std::shared_ptr<const void>*>(hint); }, held.get());
      held.release();  // the message owns it now
      if (kind_ == SocketKind::kRouter && !socket_.send(zmq::buffer(peer), zmq::send_flags::sndmore)) return false;
      // A multi-part message is queued whole or not at all once its first part is accepted.
      if (!socket_.send(zmq::buffer(head), zmq::send_flags::sndmore)) return false;
      return socket_.send(tail_msg, zmq::send_flags::none).has_value();
    } catch (const zmq::error_t&) {
      return false;
    }
  }

  std::optional<Packet> recv(int timeout_ms) override {
    try {
      return recv_now(timeout_ms);
    } catch (const zmq::error_t& e) {
      // A signal (SIGTERM asking the process to stop) interrupted the wait: nothing arrived; the
      // caller's loop sees its stop flag. Anything else is the socket's failure.
      if (e.num() == EINTR) return std::nullopt;
      throw;
    }
  }

 private:
  std::optional<Packet> recv_now(int timeout_ms) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) <= 0) return std::nullopt;
    Packet p;
    zmq::message_t msg;
    if (!socket_.recv(msg, zmq::recv_flags::dontwait)) return std::nullopt;
    if (kind_ == SocketKind::kRouter) {
      p.peer = msg.to_string();
      if (!msg.more() || !socket_.recv(msg, zmq::recv_flags::dontwait)) return std::nullopt;
    }
    p.bytes = msg.to_string();
    // Drain stray frames of a multi-part message (garbage from a foreign client).
    while (msg.more() && socket_.recv(msg, zmq::recv_flags::dontwait)) {
    }
    return p;
  }

  bool recv_lent(int timeout_ms, const std::function<void(const std::vector<std::string_view>&)>& use) override {
    try {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) <= 0) return false;
      std::vector<zmq::message_t> parts(1);
      if (!socket_.recv(parts[0], zmq::recv_flags::dontwait)) return false;
      if (kind_ == SocketKind::kRouter && (!parts[0].more() || !socket_.recv(parts[0], zmq::recv_flags::dontwait))) return false;
      // The parts of one message arrive together. More of them than a split message has are a
      // foreign client's: drained, and the message handed on with an empty frame the decoders refuse.
      constexpr size_t kMaxFrames = 8;
      bool too_many = false;
      while (parts.back().more() && !too_many) {
        parts.emplace_back();
        if (!socket_.recv(parts.back(), zmq::recv_flags::dontwait)) break;
        too_many = parts.size() > kMaxFrames;
      }
      for (zmq::message_t rest; too_many && parts.back().more() && socket_.recv(rest, zmq::recv_flags::dontwait);)
        parts.back().swap(rest);
      std::vector<std::string_view> frames;
      for (size_t i = 0; i < std::min(parts.size(), kMaxFrames); ++i)
        frames.emplace_back(static_cast<const char*>(parts[i].data()), parts[i].size());
      if (too_many) frames.emplace_back();
      use(frames);
      return true;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return false;
      throw;
    }
  }

  SocketKind kind_;
  zmq::socket_t socket_;
};

struct InprocQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> items;
};

class InprocChannel : public Channel {
 public:
  InprocChannel(std::shared_ptr<InprocQueue> in, std::shared_ptr<InprocQueue> out) : in_(std::move(in)), out_(std::move(out)) {}
  bool send(const std::string& bytes, const std::string&) override {
    {
      std::lock_guard<std::mutex> l(out_->mu);
      out_->items.push_back(bytes);
    }
    out_->cv.notify_one();
    return true;
  }
  std::optional<Packet> recv(int timeout_ms) override {
    std::unique_lock<std::mutex> l(in_->mu);
    auto ready = [&] { return !in_->items.empty(); };
    if (timeout_ms < 0)
      in_->cv.wait(l, ready);
    else if (!in_->cv.wait_for(l, std::chrono::milliseconds(timeout_ms), ready))
      return std::nullopt;
    Packet p{"inproc", std::move(in_->items.front())};
    in_->items.pop_front();
    return p;
  }

 private:
  std::shared_ptr<InprocQueue> in_, out_;
};

}  // namespace

std::unique_ptr<Channel> zmq_bind(SocketKind kind, const std::string& endpoint, const SocketOptions& o) {
  return std::make_unique<ZmqChannel>(kind, endpoint, true, o);
}

std::unique_ptr<Channel> zmq_connect(SocketKind kind, const std::string& endpoint, const SocketOptions& o) {
  return std::make_unique<ZmqChannel>(kind, endpoint, false, o);
}

std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>> inproc_pair() {
  auto a = std::make_shared<InprocQueue>(), b = std::make_shared<InprocQueue>();
  return {std::make_unique<InprocChannel>(a, b), std::make_unique<InprocChannel>(b, a)};
}

std::optional<Message> receive(Channel& ch, int timeout_ms, ReceiveStats& stats, std::string* peer, const DecodeLimits& limits) {
  auto p = ch.recv(timeout_ms);
  if (!p) return std::nullopt;
  auto d = decode(p->bytes.data(), p->bytes.size(), limits);
  if (!d.message) {
    ++stats.rejected;
    stats.last_error = d.error;
    std::cerr << "wire: dropped a message (" << d.error << "); " << stats.rejected << " rejected so far\n";
    return std::nullopt;
  }
  ++stats.accepted;
  if (peer) *peer = p->peer;
  return std::move(d.message);
}

bool send_message(Channel& ch, const Message& m, const std::string& peer) { return ch.send(encode(m), peer); }

}  // namespace keel::wire
