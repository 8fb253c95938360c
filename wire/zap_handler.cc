#include "wire/zap_handler.h"

#include <algorithm>
#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "wire/curve.h"

namespace keel::wire {

namespace {

std::atomic<int64_t> g_refused{0};

std::string z85(const std::string& binary_key) {
  char text[41] = {0};
  if (binary_key.size() != 32 || !zmq_z85_encode(text, reinterpret_cast<const uint8_t*>(binary_key.data()), 32)) return "";
  return text;
}

class ZapHandler {
 public:
  explicit ZapHandler(zmq::context_t& ctx) : socket_(ctx, zmq::socket_type::rep) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("inproc://zeromq.zap.01");
    thread_ = std::thread([this] { serve(); });
  }
  std::string add_domain(const std::vector<std::string>& allowed) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string name = "keel-" + std::to_string(domains_.size());
    domains_[name] = allowed;
    return name;
  }

  ~ZapHandler() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }

 private:
  void serve() {
    while (!stop_.load()) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) <= 0) continue;
      std::vector<std::string> frames;
      zmq::message_t m;
      do {
        if (!socket_.recv(m, zmq::recv_flags::none)) break;
        frames.push_back(m.to_string());
      } while (m.more());
      // Request: version, request id, domain, address, routing id, mechanism, credentials...
      const bool well_formed = frames.size() >= 6 && frames[0] == "1.0";
      const std::string request_id = frames.size() > 1 ? frames[1] : "";
      bool admit = false;
      std::string client;
      if (well_formed && frames[5] == "CURVE" && frames.size() >= 7) {
        client = z85(frames[6]);
        std::lock_guard<std::mutex> lock(mu_);
        const auto d = domains_.find(frames[2]);
        admit =
            !client.empty() && d != domains_.end() && std::find(d->second.begin(), d->second.end(), client) != d->second.end();
      }
      if (!admit) {
        ++g_refused;
        std::cerr << "transport: refused " << (well_formed ? frames[5] : std::string("malformed")) << " client "
                  << (client.empty() ? "" : client + " ") << "from " << (frames.size() > 3 ? frames[3] : "?")
                  << ": key not in the allowed list\n";
      }
      const std::string reply[] = {
          "1.0", request_id, admit ? "200" : "400", admit ? "OK" : "key not allowed", admit ? client : "", ""};
      for (size_t i = 0; i < 6; ++i)
        socket_.send(zmq::buffer(reply[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }

  zmq::socket_t socket_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::string>> domains_;  // ZAP domain -> allowed client keys
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

int64_t curve_refused_count() { return g_refused.load(); }

namespace detail {

std::string register_zap_domain(zmq::context_t& ctx, const std::vector<std::string>& allowed) {
  // Constructed after the context it uses, so destroyed (thread joined) before the context ends.
  static ZapHandler handler(ctx);
  return handler.add_domain(allowed);
}

}  // namespace detail
}  // namespace keel::wire
