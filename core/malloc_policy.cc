#include "core/malloc_policy.h"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace keel {
namespace {

// glibc's own adjustment raises the mmap threshold up to this and the trim threshold to twice it.
constexpr int kGlibcMaxMmapThreshold = 32 << 20;

}  // namespace

bool keep_freed_memory() {
#if defined(__GLIBC__)
  const int bytes = static_cast<int>(kKeptBlockBytes);
  const bool mmap_set = mallopt(M_MMAP_THRESHOLD, bytes) == 1;
  if (!mmap_set) mallopt(M_MMAP_THRESHOLD, kGlibcMaxMmapThreshold);  // glibc before 2.35 caps it there
  const bool trim_set = mallopt(M_TRIM_THRESHOLD, bytes) == 1;
  return mmap_set && trim_set;
#else
  return false;
#endif
}

void return_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, kGlibcMaxMmapThreshold);
  mallopt(M_TRIM_THRESHOLD, 2 * kGlibcMaxMmapThreshold);
#endif
}

}  // namespace keel
