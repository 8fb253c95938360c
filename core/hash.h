// 64-bit FNV-1a: the one content hash keel uses (tokenizer identity, held-out splits, weight checksums).
#pragma once

#include <cstdint>
#include <string_view>

namespace keel {

inline uint64_t fnv1a64(std::string_view bytes, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace keel
