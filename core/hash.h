// 64-bit FNV-1a: the one content hash keel uses (tokenizer identity, held-out splits, weight checksums).
#pragma once

#include <cstdint>
#include <string_view>

namespace keel {

inline constexpr uint64_t kFnvOffset = 1469598103934665603ull;
inline constexpr uint64_t kFnvPrime = 1099511628211ull;

inline uint64_t fnv1a64(std::string_view bytes, uint64_t h = kFnvOffset) {
  for (unsigned char c : bytes) h = (h ^ c) * kFnvPrime;
  return h;
}

}  // namespace keel
