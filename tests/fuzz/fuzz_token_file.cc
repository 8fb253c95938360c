// Any bytes as a token file: opened and read to the end, or refused with a KeelError.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/token_file.h"
#include "tests/fuzz/fuzz_seeds.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!keel::fuzz::seed_dir()) return 0;
  for (int width : {100, 70000}) {  // a 2-byte and a 4-byte token file
    const std::string path = std::string(keel::fuzz::seed_dir()) + "/seed-" + std::to_string(width);
    keel::TokenFileWriter w(path, width, 0);
    w.append({5, 7, 0, 9, width - 1, 0});
    w.finish();
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/keel-fuzz-token-file-" + std::to_string(::getpid()) + ".bin";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    keel::TokenFile t(path);
    FUZZ_ASSERT(size >= 64 && static_cast<uint64_t>(t.size()) <= (size - 64) / 2,
                "an opened token file holds its count of tokens");
    std::vector<int64_t> out(256);
    for (int64_t i = 0; i < t.size(); i += 256) {
      const int64_t n = std::min<int64_t>(256, t.size() - i);
      t.read(i, n, out.data());
    }
  } catch (const keel::KeelError&) {
  }
  return 0;
}
