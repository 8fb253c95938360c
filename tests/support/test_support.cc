#include "tests/support/test_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "core/error.h"
#include "learner/run_status.h"

namespace keel::test {

namespace fs = std::filesystem;

static std::string env_or(const char* name, const std::string& dflt) {
  const char* v = std::getenv(name);
  return v ? v : dflt;
}

std::string source_dir() { return env_or("KEEL_SOURCE_DIR", "."); }
std::string keel_bin() { return env_or("KEEL_BIN", "keel"); }

std::string temp_path(const std::string& name) {
  return env_or("KEEL_TEST_TMP", fs::temp_directory_path().string() + "/keel-tests") + "/" + name;
}

std::string temp_dir(const std::string& name) {
  const std::string dir = temp_path(name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

static bool port_is_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // No SO_REUSEADDR: a port still in TIME_WAIT counts as taken, as it would for a plain bind.
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

int free_port_block(int count) {
  constexpr int kLow = 20000, kHigh = 32000, kSpan = kHigh - kLow;
  if (count < 1 || count > 64)
    throw std::invalid_argument("free_port_block: count " + std::to_string(count) + " is not in 1..64");
  static std::mutex mu;
  // A golden-ratio stride spreads neighbouring process ids far apart in the range.
  static int next = kLow + static_cast<int>(static_cast<uint64_t>(::getpid()) * 7417u % kSpan);
  std::lock_guard<std::mutex> lock(mu);
  for (int scanned = 0; scanned < kSpan;) {
    if (next + count > kHigh) next = kLow;
    const int first = next;
    int free = 0;
    while (free < count && port_is_free(first + free)) ++free;
    if (free == count) {
      next = first + count;
      return first;
    }
    next = first + free + 1;  // past the taken port
    scanned += free + 1;
  }
  throw std::runtime_error("free_port_block: no " + std::to_string(count) + " consecutive free TCP ports on 127.0.0.1 in [" +
                           std::to_string(kLow) + ", " + std::to_string(kHigh) + ")");
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

RunResult run(const std::string& command) {
  RunResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + command);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

RunResult python(const std::string& script_and_args) {
  return run("/usr/bin/python3 " + source_dir() + "/tests/reference/" + script_and_args);
}

RunResult keel(const std::string& args) { return run(keel_bin() + " " + args); }

void pin_cpu_kernels() {
#if defined(__x86_64__)
  ::setenv("ATEN_CPU_CAPABILITY", "avx2", 0);
  ::setenv("OPENBLAS_CORETYPE", "Haswell", 0);
#endif
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

std::string keel_error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const KeelError& e) {
    return e.what();
  }
  return "";
}

ModelConfig tiny_model_config() {
  ModelConfig c;
  c.vocab_size = 24;
  c.d_model = 16;
  c.n_layer = 1;
  c.n_head = 2;
  c.max_positions = 32;
  c.bos_id = 1;
  c.eos_id = 2;
  c.pad_id = 0;
  return c;
}

Transformer lively_model(Family family, int64_t vocab, int64_t d, uint64_t seed) {
  ModelConfig c;
  c.family = family;
  c.vocab_size = vocab;
  c.d_model = d;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = family == Family::kLlama ? 2 : 0;
  c.max_positions = 64;
  c.tie_embeddings = family == Family::kGpt2;
  c.eos_id = 2;
  c.pad_id = 3;
  Transformer m(c);
  m->init_weights(seed);  // seeds LibTorch's generator, which the perturbation continues
  torch::NoGradGuard ng;
  for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.05);
  m->eval();
  return m;
}

RolloutServiceOptions inproc_rollout_service(const std::string& name) {
  RolloutServiceOptions o;
  o.rollouts_endpoint = "inproc://" + name + "-rollouts";
  o.weights_endpoint = "inproc://" + name + "-weights";
  o.chunks_endpoint = "inproc://" + name + "-chunks";
  o.shared_dir = "";
  return o;
}

double max_parameter_diff(Transformer& a, Transformer& b) {
  double d = 0;
  auto pb = b->named_parameters();
  for (const auto& p : a->named_parameters()) d = std::max(d, (p.value() - pb[p.key()]).abs().max().item<double>());
  return d;
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout, std::chrono::milliseconds poll) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(poll);
  }
  return true;
}

uint64_t published_versions(const std::string& launch_out) {
  const auto s = read_run_status(launch_out + "/learner");
  return s ? s->version : 0;
}

}  // namespace keel::test
