// Seeds for the fuzz targets: each target's LLVMFuzzerInitialize writes a few valid inputs into the
// directory named by KEEL_FUZZ_SEEDS (scripts/fuzz.sh passes it as a corpus), so that mutation
// starts from real messages and files rather than from nothing.
#pragma once

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
