// Helpers shared by keel's tests: temporary directories, the source tree, free TCP ports, and
// running the independent references (Debian's /usr/bin/python3 with torch, node) and the keel binary.
// A TEST that runs Python or Node belongs to a suite whose name ends in AgainstPython or AgainstNode
// (TEST(ReplayAgainstPython, ...)): tests/CMakeLists.txt runs those under the CTest label `reference`,
// so that the label `unit` needs neither.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "core/model_config.h"
#include "core/transformer.h"
#include "learner/rollout_service.h"

namespace keel::test {

std::string source_dir();                        // KEEL_SOURCE_DIR
std::string keel_bin();                          // KEEL_BIN: the built keel executable
std::string temp_dir(const std::string& name);   // a fresh, empty directory for this test
std::string temp_path(const std::string& name);  // where temp_dir(name) is, left as it is

// Returns the first of `count` (1..64) consecutive TCP ports on 127.0.0.1 that nothing is bound to
// now: each is bound once with a plain socket and closed again. Free now is not reserved, so bind
// them soon. Candidates lie in [20000, 32000), below Linux's ephemeral range (32768-60999) so that
// no outgoing connection takes one meanwhile, and start at an offset drawn from the process id so
// that test processes running in parallel rarely meet; one process never gets a port twice.
// Thread-safe. Throws std::runtime_error when no such block is free.
int free_port_block(int count);

struct RunResult {
  int code = -1;
  std::string output;  // stdout and stderr together
};
// Runs a shell command, capturing its output.
RunResult run(const std::string& command);
// Runs tests/reference/<script> with /usr/bin/python3.
RunResult python(const std::string& script_and_args);
// Runs the keel binary with `args`.
RunResult keel(const std::string& args);
// Makes every keel this process starts compute on the AVX2 kernels on any x86-64 machine (LibTorch's
// ATEN_CPU_CAPABILITY, which keel's own kernels follow too, and OpenBLAS's OPENBLAS_CORETYPE; values
// already set are kept). The learning
// tests' margins were measured on that numeric path; on an AVX-512 machine LibTorch and OpenBLAS
// round differently and a small model's trajectory moves with it (a run of the same seed there
// gave DPO no arithmetic gain and SFT less headroom for RL).
void pin_cpu_kernels();

std::string shell_quote(const std::string& s);
std::string read_text(const std::string& path);
void write_text(const std::string& path, const std::string& text);
// Runs `f` and returns the message of the KeelError it throws ("" when it throws none; any other
// exception escapes and fails the test).
std::string keel_error_of(const std::function<void()>& f);

// Polls `cond` every `poll` until it holds (true) or `timeout` passes (false): a test waits on
// the condition it needs, not on a guess of how long that takes.
bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout,
                std::chrono::milliseconds poll = std::chrono::milliseconds(100));
// The policy versions a run launched with `keel launch --out dir` has published (its learner's
// status.json; 0 before the first).
uint64_t published_versions(const std::string& launch_out);

// A one-layer GPT-2 of width 16 over 24 tokens (bos 1, eos 2, pad 0): the unit tests' policy.
ModelConfig tiny_model_config();

// A two-layer model of `family` (4 heads; Llama with 2 key/value heads; 64 positions; eos 2,
// pad 3) over `vocab` tokens at width `d`, initialised from `seed` and perturbed so that its
// logits are far from uniform; in eval mode on the CPU. The decoding tests' model.
Transformer lively_model(Family family, int64_t vocab, int64_t d, uint64_t seed = 42);
// Options of a rollout service on in-process sockets named after `name` ("inproc://NAME-rollouts",
// ...-weights, ...-chunks), with no shared-memory region.
RolloutServiceOptions inproc_rollout_service(const std::string& name);

// Largest |difference| between two models' parameters of the same names.
double max_parameter_diff(Transformer& a, Transformer& b);

}  // namespace keel::test
