#include "core/malloc_policy.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace keel {

bool keep_freed_memory() {
#if defined(__GLIBC__)
  const int bytes = static_cast<int>(kKeptBlockBytes);
  return mallopt(M_MMAP_THRESHOLD, bytes) == 1 && mallopt(M_TRIM_THRESHOLD, bytes) == 1;
#else
  return false;
#endif
}

}  // namespace keel
