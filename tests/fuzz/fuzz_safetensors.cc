// Any bytes as a safetensors file: parsed into tensors, or refused with a KeelError (never another
// exception, a crash or an allocation beyond the bytes given). The same bytes as a file read
// tensor by tensor (SafetensorsFile, what model loads use) are accepted exactly when the parser
// accepts them, and give the same tensors.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/safetensors.h"
#include "core/safetensors_file.h"
#include "tests/fuzz/fuzz_seeds.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  keel::fuzz::write_seed("seed-0", keel::safetensors_bytes({{"wte.weight", torch::arange(6, torch::kFloat32).reshape({2, 3})},
                                                            {"ids", torch::arange(4, torch::kInt64)},
                                                            {"h", torch::ones({2}, torch::kBFloat16)}},
                                                           {{"format", "pt"}}));
  return 0;
}

namespace {

// The tensors of `bytes` written to a file and read back by SafetensorsFile; *refused when it
// throws a KeelError (anything else escapes and fails the run).
keel::TensorMap read_as_file(const std::string& bytes, bool* refused) {
  static const std::string path = "/tmp/keel-fuzz-safetensors-" + std::to_string(::getpid());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  *refused = false;
  try {
    return keel::SafetensorsFile(path).read_all();
  } catch (const keel::KeelError&) {
    *refused = true;
    return {};
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  bool file_refused = false;
  const auto from_file = read_as_file(bytes, &file_refused);
  try {
    keel::Metadata meta;
    const auto tensors = keel::parse_safetensors(bytes, "fuzz input", &meta);
    int64_t total = 0;
    for (const auto& [name, t] : tensors) total += t.numel() * static_cast<int64_t>(t.element_size());
    FUZZ_ASSERT(total <= static_cast<int64_t>(size), "the tensors hold no more bytes than the file");
    FUZZ_ASSERT(!file_refused, "the file reader accepts what the parser accepts");
    FUZZ_ASSERT(from_file.size() == tensors.size(), "the file reader reads every tensor");
    for (const auto& [name, t] : tensors) {
      const auto& f = from_file.at(name);
      FUZZ_ASSERT(f.scalar_type() == t.scalar_type() && f.sizes() == t.sizes(), "same dtype and shape");
      FUZZ_ASSERT(t.numel() == 0 || std::memcmp(f.data_ptr(), t.data_ptr(), t.numel() * t.element_size()) == 0, "same bytes");
    }
  } catch (const keel::KeelError&) {
    FUZZ_ASSERT(file_refused, "the file reader refuses what the parser refuses");
  }
  return 0;
}
