// The ZAP handler (ZeroMQ RFC 27) that decides which CURVE clients a bound socket admits: a thread
// answering on inproc://zeromq.zap.01 of the process's ZeroMQ context. Each CURVE server socket
// has its own ZAP domain with its own allowed keys; the handler admits those and refuses (and
// counts) the rest. Internal to wire/.
#pragma once

#include <string>
#include <vector>
#include <zmq.hpp>

namespace keel::wire::detail {

// Starts the handler on `ctx` (once per process) and registers a new domain admitting `allowed`;
// returns the domain to set as the socket's ZMQ_ZAP_DOMAIN. Must run before the CURVE server
// socket binds: without a handler libzmq would admit every client.
std::string register_zap_domain(zmq::context_t& ctx, const std::vector<std::string>& allowed);

}  // namespace keel::wire::detail
