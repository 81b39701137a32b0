#include "comcl/imaging/batch_allocator.h"

#include <malloc.h>

namespace comcl::imaging {

bool tuneAllocatorForBatchDecoding() {
  constexpr int kMmapThreshold = 64 << 20;   // buffers below this come from the heap and are reused
  constexpr int kTrimThreshold = 256 << 20;  // free memory kept at the top of the heap before trimming
  return mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 && mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
}

}  // namespace comcl::imaging
