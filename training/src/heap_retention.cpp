#include "comcl/training/heap_retention.h"

#include <climits>
#include <mutex>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace comcl::training {

namespace {

std::mutex& scopeMutex() {
  static std::mutex mutex;
  return mutex;
}

int scopes = 0;  // guarded by scopeMutex()

#if defined(__GLIBC__)
constexpr int kDefaultThreshold = 128 * 1024;  // glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD defaults

void retain() {
  // Blocks up to 1 GiB come from the heap (larger ones are rare and still mapped); nothing is trimmed.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

void release() {
  mallopt(M_MMAP_THRESHOLD, kDefaultThreshold);
  mallopt(M_TRIM_THRESHOLD, kDefaultThreshold);
  malloc_trim(0);
}
#else
void retain() {}
void release() {}
#endif

}  // namespace

HeapRetention::HeapRetention(bool enabled) : enabled_(enabled) {
  if (!enabled_)
    return;
  std::lock_guard lock(scopeMutex());
  if (scopes++ == 0)
    retain();
}

HeapRetention::~HeapRetention() {
  if (!enabled_)
    return;
  std::lock_guard lock(scopeMutex());
  if (--scopes == 0)
    release();
}

bool HeapRetention::active() {
  std::lock_guard lock(scopeMutex());
  return scopes > 0;
}

}  // namespace comcl::training
