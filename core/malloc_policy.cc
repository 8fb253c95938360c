#include "core/malloc_policy.h"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace keel {

bool keep_freed_memory() {
#if defined(__GLIBC__)
  const int bytes = static_cast<int>(kKeptBlockBytes);
  const bool mmap_set = mallopt(M_MMAP_THRESHOLD, bytes) == 1;
  if (!mmap_set) mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc before 2.35 caps it there
  const bool trim_set = mallopt(M_TRIM_THRESHOLD, bytes) == 1;
  return mmap_set && trim_set;
#else
  return false;
#endif
}

void return_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

}  // namespace keel
