#include "wire/curve.h"

#include <sys/stat.h>
#include <zmq.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace keel::wire {

namespace fs = std::filesystem;

namespace {

TransportSecurity g_security;

bool is_z85_key(const std::string& k) {
  if (k.size() != 40) return false;
  uint8_t bin[32];
  return zmq_z85_decode(bin, k.c_str()) != nullptr;
}

std::vector<std::string> key_lines(const std::string& path) {
  std::ifstream f(path);
  KEEL_CHECK(f, "cannot read key file " << path);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    line.erase(0, line.find_first_not_of(" \t\r"));
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line.empty() || line[0] == '#') continue;
    out.push_back(line);
  }
  return out;
}

void write_file_atomically(const std::string& path, const std::string& text, mode_t mode) {
  KEEL_CHECK(!fs::exists(path), "key file " << path << " exists; refusing to overwrite it");
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    KEEL_CHECK(f, "cannot write " << tmp);
    ::chmod(tmp.c_str(), mode);
    f << text;
    KEEL_CHECK(f.good(), "cannot write " << tmp);
  }
  fs::rename(tmp, path);
}

}  // namespace

CurveKeyPair generate_curve_keys() {
  char pub[41], sec[41];
  KEEL_CHECK(zmq_curve_keypair(pub, sec) == 0, "this libzmq was built without CURVE support");
  return {pub, sec};
}

void write_curve_keys(const std::string& prefix, const CurveKeyPair& keys) {
  const auto dir = fs::path(prefix).parent_path();
  if (!dir.empty()) fs::create_directories(dir);
  write_file_atomically(
      prefix + ".secret",
      "# keel CURVE key pair: public, then secret. Keep this file private.\n" + keys.public_key + "\n" + keys.secret_key + "\n",
      0600);
  write_file_atomically(prefix + ".pub", keys.public_key + "\n", 0644);
}

CurveKeyPair read_curve_secret(const std::string& path) {
  const auto lines = key_lines(path);
  KEEL_CHECK(lines.size() == 2, "key file " << path << " should hold two keys (public, secret), found " << lines.size()
                                            << " (is it a .pub file? keel keys generate writes NAME.secret)");
  for (const auto& k : lines) KEEL_CHECK(is_z85_key(k), "key file " << path << ": '" << k << "' is not a 40-character Z85 key");
  return {lines[0], lines[1]};
}

std::string read_curve_public(const std::string& path) {
  const auto lines = key_lines(path);
  KEEL_CHECK(!lines.empty(), "key file " << path << " holds no key");
  KEEL_CHECK(is_z85_key(lines[0]), "key file " << path << ": '" << lines[0] << "' is not a 40-character Z85 key");
  return lines[0];
}

std::vector<std::string> read_curve_allowed(const std::string& path) {
  std::vector<std::string> keys;
  if (fs::is_directory(path)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".pub") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) keys.push_back(read_curve_public(f.string()));
  } else {
    for (const auto& k : key_lines(path)) {
      KEEL_CHECK(is_z85_key(k), "allowed-keys file " << path << ": '" << k << "' is not a 40-character Z85 key");
      keys.push_back(k);
    }
  }
  KEEL_CHECK(!keys.empty(), "no allowed public keys in " << path << " (a file of keys, or a directory of *.pub files)");
  return keys;
}

void set_transport_security(const TransportSecurity& s) {
  if (s.curve()) {
    KEEL_CHECK(is_z85_key(s.own.public_key) && is_z85_key(s.own.secret_key), "the CURVE key pair is not two Z85 keys");
    KEEL_CHECK(s.server_public_key.empty() || is_z85_key(s.server_public_key), "the server key is not a Z85 key");
    for (const auto& k : s.allowed) KEEL_CHECK(is_z85_key(k), "allowed key '" << k << "' is not a Z85 key");
  } else {
    KEEL_CHECK(s.server_public_key.empty() && s.allowed.empty(),
               "a server key or allowed keys were given without this process's own key pair (--curve-key)");
  }
  g_security = s;
}

const TransportSecurity& transport_security() { return g_security; }

bool is_local_endpoint(const std::string& endpoint) {
  if (endpoint.rfind("inproc://", 0) == 0 || endpoint.rfind("ipc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  std::string host = endpoint.substr(6);
  const auto colon = host.rfind(':');
  if (colon != std::string::npos) host = host.substr(0, colon);
  return host.rfind("127.", 0) == 0 || host == "localhost" || host == "[::1]" || host == "::1";
}

}  // namespace keel::wire
