// Seeds for the fuzz targets: each target's LLVMFuzzerInitialize writes a few valid inputs into the
// directory named by KEEL_FUZZ_SEEDS (scripts/fuzz.sh passes it as a corpus), so that mutation
// starts from real messages and files rather than from nothing.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace keel::fuzz {

inline void write_seed(const std::string& name, const std::string& bytes) {
  const char* dir = std::getenv("KEEL_FUZZ_SEEDS");
  if (!dir) return;
  std::filesystem::create_directories(dir);
  std::ofstream(std::string(dir) + "/" + name, std::ios::binary) << bytes;
}

inline const char* seed_dir() { return std::getenv("KEEL_FUZZ_SEEDS"); }

}  // namespace keel::fuzz

// The targets' assertion: a broken invariant prints what broke and aborts, which libFuzzer reports
// as a crash with the input that caused it (crashes and sanitizer reports fail the run as well).
#define FUZZ_ASSERT(cond, what)                                              \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "fuzz assertion failed: %s (%s)\n", what, #cond); \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

namespace keel::fuzz {}  // namespace keel::fuzz
