// Authenticated, encrypted transport and hostile-peer limits: CURVE admits only allowed client keys,
// traffic through a relay the test controls is unreadable with CURVE (and readable without, so the
// capture is shown to work), binding beyond loopback without keys is refused, key files are
// validated, and an oversized or pointer-aliasing message is rejected without a large allocation.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "tests/support/test_support.h"
#include "wire/channel.h"
#include "wire/codec.h"
#include "wire/curve.h"
#include "wire/keel.capnp.h"

namespace keel::wire {
namespace {

std::string endpoint(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

TransportSecurity server_side(const CurveKeyPair& server, std::vector<std::string> allowed) {
  TransportSecurity s;
  s.own = server;
  s.allowed = std::move(allowed);
  return s;
}

TransportSecurity client_side(const CurveKeyPair& client, const std::string& server_public) {
  TransportSecurity s;
  s.own = client;
  s.server_public_key = server_public;
  return s;
}

SocketOptions with(const TransportSecurity& s) {
  SocketOptions o;
  o.security = s;
  o.send_timeout_ms = 500;
  return o;
}

// Sends `text` and reports whether the receiver got exactly it within the wait.
bool delivered(Channel& tx, Channel& rx, const std::string& text) {
  tx.send(text);
  for (int i = 0; i < 10; ++i)
    if (auto p = rx.recv(100)) return p->bytes == text;
  return false;
}

// A TCP relay on loopback: accepts one client on `listen_port`, connects it to `upstream_port`,
// forwards both ways and keeps every byte it saw: the test's own packet capture.
class Relay {
 public:
  Relay(int listen_port, int upstream_port) : upstream_(upstream_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a = address(listen_port);
    KEEL_CHECK(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "relay cannot bind " << listen_port);
    ::listen(listen_fd_, 4);
    thread_ = std::thread([this] { run(); });
  }
  ~Relay() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  std::string seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  static sockaddr_in address(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }
  void run() {
    int client = -1, server = -1;
    while (!stop_) {
      if (client < 0) {
        pollfd p{listen_fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        client = ::accept(listen_fd_, nullptr, nullptr);
        server = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a = address(upstream_);
        if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
        continue;
      }
      pollfd p[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      char buf[65536];
      for (int i = 0; i < 2; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP))) continue;
        const ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0) {
          stop_ = true;
          break;
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          seen_.append(buf, static_cast<size_t>(n));
        }
        (void)!::write(i == 0 ? server : client, buf, static_cast<size_t>(n));
      }
    }
    if (client >= 0) ::close(client);
    if (server >= 0) ::close(server);
  }

  int upstream_;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string seen_;
  std::thread thread_;
};

// A signal that interrupts a receive (SIGTERM asking an actor or the reward service to stop) is
// "nothing arrived", not an error: the caller's loop then sees its stop flag.
TEST(Transport, ASignalDuringAReceiveIsNoMessageNotAnError) {
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  sa.sa_flags = 0;  // no SA_RESTART: the wait returns EINTR
  sigemptyset(&sa.sa_mask);
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(test::free_port_block(1));
  auto pull = zmq_bind(SocketKind::kPull, endpoint);
  std::atomic<bool> returned{false}, threw{false};
  std::thread receiver([&] {
    ReceiveStats rs;
    try {
      EXPECT_FALSE(receive(*pull, 3000, rs).has_value());
    } catch (const std::exception&) {
      threw = true;
    }
    returned = true;
  });
  const pthread_t handle = receiver.native_handle();
  for (int i = 0; i < 20 && !returned.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ::pthread_kill(handle, SIGUSR2);
  }
  receiver.join();
  ::sigaction(SIGUSR2, &old, nullptr);
  EXPECT_FALSE(threw.load()) << "an interrupted receive must not throw";
}

TEST(Transport, KeyFilesRoundTripAndBadOnesAreNamed) {
  const std::string dir = test::temp_dir("transport_keys");
  const auto keys = generate_curve_keys();
  ASSERT_EQ(keys.public_key.size(), 40u);
  write_curve_keys(dir + "/learner", keys);
  const auto back = read_curve_secret(dir + "/learner.secret");
  EXPECT_EQ(back.public_key, keys.public_key);
  EXPECT_EQ(back.secret_key, keys.secret_key);
  EXPECT_EQ(read_curve_public(dir + "/learner.pub"), keys.public_key);
  EXPECT_EQ(std::filesystem::status(dir + "/learner.secret").permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  try {
    write_curve_keys(dir + "/learner", generate_curve_keys());
    FAIL() << "overwrote a key pair";
  } catch (const KeelError& e) {
    EXPECT_NE(std::string(e.what()).find("refusing to overwrite"), std::string::npos) << e.what();
  }
  try {
    read_curve_secret(dir + "/learner.pub");
    FAIL() << "a .pub file was taken as a key pair";
  } catch (const KeelError& e) {
    EXPECT_NE(std::string(e.what()).find("learner.pub"), std::string::npos) << e.what();
  }
  test::write_text(dir + "/bad.pub", "not-a-key\n");
  try {
    read_curve_allowed(dir);
    FAIL() << "a malformed key was allowed";
  } catch (const KeelError& e) {
    EXPECT_NE(std::string(e.what()).find("not a 40-character Z85 key"), std::string::npos) << e.what();
  }
  std::filesystem::remove(dir + "/bad.pub");
  write_curve_keys(dir + "/actor-0", generate_curve_keys());
  EXPECT_EQ(read_curve_allowed(dir).size(), 2u);  // learner.pub and actor-0.pub
}

TEST(Transport, BindingBeyondLoopbackWithoutKeysIsRefused) {
  const std::string any_port = std::to_string(test::free_port_block(1));
  for (const std::string& ep : {"tcp://0.0.0.0:" + any_port, "tcp://*:" + any_port}) {
    try {
      zmq_bind(SocketKind::kPull, ep);
      FAIL() << "bound " << ep << " in clear";
    } catch (const KeelError& e) {
      EXPECT_NE(std::string(e.what()).find("refusing to bind " + ep), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(is_local_endpoint("tcp://127.0.0.1:5555"));
  EXPECT_TRUE(is_local_endpoint("ipc:///tmp/x"));
  EXPECT_FALSE(is_local_endpoint("tcp://10.0.0.2:5555"));
  // A CURVE server may bind anywhere; here it stays on loopback, since the test owns no other interface.
  const auto server = generate_curve_keys();
  const int port = test::free_port_block(1);
  EXPECT_NO_THROW(zmq_bind(SocketKind::kPull, endpoint(port), with(server_side(server, {server.public_key}))));
}

TEST(Transport, CurveAdmitsAllowedClientsOnly) {
  const auto server = generate_curve_keys(), allowed = generate_curve_keys(), stranger = generate_curve_keys();
  const int port = test::free_port_block(1);
  auto rx = zmq_bind(SocketKind::kPull, endpoint(port), with(server_side(server, {allowed.public_key})));
  const int64_t refused_before = curve_refused_count();
  auto bad = zmq_connect(SocketKind::kPush, endpoint(port), with(client_side(stranger, server.public_key)));
  EXPECT_FALSE(delivered(*bad, *rx, "from a stranger"));
  EXPECT_GT(curve_refused_count(), refused_before) << "the handshake of an unknown key must be refused by ZAP";
  auto plain = zmq_connect(SocketKind::kPush, endpoint(port), with(TransportSecurity{}));
  EXPECT_FALSE(delivered(*plain, *rx, "in clear"));
  auto good = zmq_connect(SocketKind::kPush, endpoint(port), with(client_side(allowed, server.public_key)));
  EXPECT_TRUE(delivered(*good, *rx, "from an allowed actor"));
  // A client that expects another server key does not talk to this server either.
  auto misled = zmq_connect(SocketKind::kPush, endpoint(port), with(client_side(allowed, stranger.public_key)));
  EXPECT_FALSE(delivered(*misled, *rx, "to the wrong server"));
}

TEST(Transport, CurveTrafficIsNotReadableInClear) {
  const std::string secret = "the prompt text: Sort the words: zebra apple mango";
  for (bool curve : {false, true}) {
    const int server_port = test::free_port_block(2), relay_port = server_port + 1;
    const auto server = generate_curve_keys(), client = generate_curve_keys();
    auto rx = zmq_bind(SocketKind::kPull, endpoint(server_port),
                       with(curve ? server_side(server, {client.public_key}) : TransportSecurity{}));
    Relay relay(relay_port, server_port);
    auto tx = zmq_connect(SocketKind::kPush, endpoint(relay_port),
                          with(curve ? client_side(client, server.public_key) : TransportSecurity{}));
    const auto bytes =
        encode({"actor-0", RolloutBatch{{Rollout{{1, 2}, {3}, {-0.5f}, 1, 0, 0, 1.0f, {}, true, secret, "a", 0}}, 1.0f}});
    ASSERT_TRUE(delivered(*tx, *rx, bytes)) << (curve ? "CURVE" : "plain") << " message did not arrive through the relay";
    const auto seen = relay.seen();
    if (curve) {
      EXPECT_EQ(seen.find("zebra apple mango"), std::string::npos) << "plaintext visible on the wire under CURVE";
      EXPECT_NE(seen.find("CURVE"), std::string::npos) << "no CURVE mechanism in the ZMTP greeting";
    } else {
      EXPECT_NE(seen.find("zebra apple mango"), std::string::npos) << "the capture does not see plain traffic";
    }
  }
}

TEST(Transport, OversizedMessageDropsTheSenderAndTheReceiverGoesOn) {
  SocketOptions small;
  small.max_message_bytes = 64 << 10;
  const int port = test::free_port_block(1);
  auto rx = zmq_bind(SocketKind::kPull, endpoint(port), small);
  auto big = zmq_connect(SocketKind::kPush, endpoint(port));
  big->send(std::string(4 << 20, 'x'));
  EXPECT_FALSE(rx->recv(500)) << "a message over ZMQ_MAXMSGSIZE was delivered";
  auto honest = zmq_connect(SocketKind::kPush, endpoint(port));
  EXPECT_TRUE(delivered(*honest, *rx, "small and honest"));
  // The decoder refuses oversized buffers before parsing as well.
  DecodeLimits limits;
  limits.max_bytes = 1 << 10;
  const std::string large(4 << 10, '\0');
  EXPECT_NE(decode(large.data(), large.size(), limits).error.find("exceeds the limit"), std::string::npos);
}

long peak_rss_kb() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

// A rollout batch whose rollouts all point their prompt tokens at one 256 KiB blob: a few hundred
// KiB on the wire that a naive decoder would copy into gigabytes.
std::vector<capnp::word> aliasing_message(int rollouts) {
  // One segment, so that every pointer can reach the blob.
  capnp::MallocMessageBuilder builder(1 << 18, capnp::AllocationStrategy::FIXED_SIZE);
  auto e = builder.initRoot<capnp_schema::Envelope>();
  e.setVersion(kWireVersion);
  e.setSender("hostile");
  auto list = e.initRollouts().initRollouts(static_cast<unsigned>(rollouts));
  const std::vector<int32_t> blob(65536, 7), token = {2};
  const std::vector<float> logprob = {-0.1f};
  for (auto r : list) {
    r.setResponseTokens(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(token.data()), 4));
    r.setLogprobs(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(logprob.data()), 4));
  }
  list[0].setPromptTokens(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(blob.data()), blob.size() * 4));
  auto flat = capnp::messageToFlatArray(builder);
  EXPECT_EQ(builder.getSegmentsForOutput().size(), 1u);
  std::vector<capnp::word> words(flat.begin(), flat.end());
  capnp::FlatArrayMessageReader reader(kj::ArrayPtr<const capnp::word>(words.data(), words.size()));
  const auto read = reader.getRoot<capnp_schema::Envelope>().getRollouts().getRollouts();
  const auto target = reinterpret_cast<const capnp::word*>(read[0].getPromptTokens().begin());
  for (unsigned i = 1; i < read.size(); ++i) {
    capnp::AnyStruct::Reader any = read[i];
    const auto data = any.getDataSection();
    // promptTokens is the first pointer of Rollout, right after the data section.
    auto* pointer = const_cast<capnp::word*>(reinterpret_cast<const capnp::word*>(data.begin() + data.size()));
    const int64_t offset = target - (pointer + 1);  // words from the end of the pointer to the blob
    const uint64_t list_pointer = (static_cast<uint64_t>(static_cast<uint32_t>(offset) << 2) | 1u) |
                                  (uint64_t{2} << 32) |  // element size: byte
                                  (uint64_t{65536 * 4} << 35);
    std::memcpy(static_cast<void*>(pointer), &list_pointer, 8);
  }
  return words;
}

TEST(Transport, AliasingMessageIsRejectedWithoutALargeAllocation) {
  // The forged pointers are valid: with three rollouts every one reads the blob.
  const auto few = aliasing_message(3);
  auto d = decode(few.data(), few.size() * 8);
  ASSERT_TRUE(d.message) << d.error;
  const auto& rs = std::get<RolloutBatch>(d.message->body).rollouts;
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[2].prompt_tokens.size(), 65536u);
  // Three thousand aliases would be 750 MiB of copies; decoding stops at the traversal bound.
  const auto many = aliasing_message(3000);
  const long before = peak_rss_kb();
  d = decode(many.data(), many.size() * 8);
  EXPECT_FALSE(d.message);
  EXPECT_NE(d.error.find("traversal"), std::string::npos) << d.error;
  EXPECT_LT(peak_rss_kb() - before, 64 * 1024) << "decoding allocated more than 64 MiB";
}

}  // namespace
}  // namespace keel::wire
