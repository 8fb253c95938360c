// Any bytes as a safetensors file: parsed into tensors, or refused with a KeelError (never another
// exception, a crash or an allocation beyond the bytes given).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/fuzz/fuzz_seeds.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  keel::fuzz::write_seed("seed-0", keel::safetensors_bytes({{"wte.weight", torch::arange(6, torch::kFloat32).reshape({2, 3})},
                                                            {"ids", torch::arange(4, torch::kInt64)},
                                                            {"h", torch::ones({2}, torch::kBFloat16)}},
                                                           {{"format", "pt"}}));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    keel::Metadata meta;
    const auto tensors = keel::parse_safetensors(bytes, "fuzz input", &meta);
    int64_t total = 0;
    for (const auto& [name, t] : tensors) total += t.numel() * static_cast<int64_t>(t.element_size());
    FUZZ_ASSERT(total <= static_cast<int64_t>(size), "the tensors hold no more bytes than the file");
  } catch (const keel::KeelError&) {
  }
  return 0;
}
