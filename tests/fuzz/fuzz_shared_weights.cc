// Any bytes as a shared weights file (wire/weights/region.h): opened and read, or refused with a
// KeelError. Every view a file yields lies inside the mapping, so summing it never faults.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "core/error.h"
#include "wire/weights/region.h"
#include "tests/fuzz/fuzz_seeds.h"

namespace {
std::string scratch() { return "/tmp/keel-fuzz-shared-weights-" + std::to_string(::getpid()); }
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Seed: a real file holding version 0.
  const std::string path = scratch() + ".seed";
  {
    auto w = keel::SharedWeights::create(path, {{"wte.weight", torch::zeros({4, 3})}, {"ids", torch::zeros({5}, torch::kLong)}});
    w->write(0, {{"wte.weight", torch::ones({4, 3})}, {"ids", torch::arange(5, torch::kLong)}});
    std::ifstream in(path, std::ios::binary);
    keel::fuzz::write_seed("seed-0", std::string(std::istreambuf_iterator<char>(in), {}));
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = scratch();
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  try {
    auto r = keel::SharedWeights::open(path);
    FUZZ_ASSERT(r->file_bytes() == size, "the mapping is the file");
    uint64_t v = 0;
    if (r->newest(&v)) {
      r->read(v, [&](const keel::TensorMap& t) {
        for (const auto& [name, x] : t) (void)x.to(torch::kFloat64).sum().item<double>();  // touches every byte
      });
    }
  } catch (const keel::KeelError&) {
  }
  return 0;
}
