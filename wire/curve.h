// Authenticated, encrypted transport: ZeroMQ CURVE, and the process-wide policy of when it is used.
//
// Keys are Z85 text (40 characters). `keel keys generate --out NAME` writes NAME.pub (the public
// key, one line: hand it to peers) and NAME.secret (public then secret key, two lines, mode 0600).
//
// The policy, set once at process start before any socket is made:
//  - no key pair configured: TCP sockets carry plain ZMTP, and binding a TCP socket to anything but
//    a loopback address is refused (a learner or reward service is never reachable in clear from
//    another host);
//  - a key pair configured: every TCP socket runs CURVE. A bound socket is a CURVE server that
//    admits only clients whose public key is in the allowed list (a ZAP handler in this process
//    checks each handshake and counts refusals); a connecting socket is a CURVE client that also
//    authenticates the server by its public key.
// inproc:// and ipc:// endpoints never leave the machine and are not affected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel::wire {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

CurveKeyPair generate_curve_keys();
// Writes PREFIX.pub and PREFIX.secret (mode 0600), each atomically; refuses to overwrite.
void write_curve_keys(const std::string& prefix, const CurveKeyPair& keys);
// A NAME.secret file (both keys). Errors name the file and what is wrong with it.
CurveKeyPair read_curve_secret(const std::string& path);
// The public key of a NAME.pub file, or of a NAME.secret file (its first line).
std::string read_curve_public(const std::string& path);
// Public keys allowed to connect: a file with one key per line ('#' comments), or a directory whose
// *.pub files each hold one.
std::vector<std::string> read_curve_allowed(const std::string& path);

struct TransportSecurity {
  CurveKeyPair own;                  // empty: no CURVE (loopback-only binding)
  std::string server_public_key;     // the key of the servers this process connects to
  std::vector<std::string> allowed;  // client keys admitted by the sockets this process binds
  bool curve() const { return !own.secret_key.empty(); }
};

// Validates (keys well-formed; a client key needs a server key or an allowed list to be useful)
// and installs the policy for every later zmq_bind / zmq_connect.
void set_transport_security(const TransportSecurity& s);
const TransportSecurity& transport_security();

// Handshakes refused because the client's key was not in the allowed list.
int64_t curve_refused_count();

// tcp://127.x.y.z, tcp://localhost, tcp://[::1]; and inproc:// / ipc://, which never leave the host.
bool is_local_endpoint(const std::string& endpoint);

}  // namespace keel::wire
