// Keeps freed memory in the process heap while CPU training runs.
//
// A training step frees and re-allocates the same large activation and gradient buffers every time. glibc
// serves blocks above its mmap threshold (128 KiB, raised dynamically to at most 32 MiB) with fresh mmap()s
// and unmaps them on free, so each step page-faults tens of megabytes of zeroed pages back in: measured at
// 15-20 % of a MoCo step's CPU time spent in the kernel (docs/benchmarks.md). While a HeapRetention lives,
// such blocks come from the heap and stay there for the next step; when the last one ends the thresholds
// return to glibc's defaults (fixed from then on: glibc has no call to re-enable its dynamic threshold) and
// malloc_trim hands the retained memory back to the system. Scopes nest and may overlap across threads.
// Without glibc it does nothing.
#pragma once

namespace comcl::training {

class HeapRetention {
 public:
  // Training on the CPU passes true; on a GPU the host heap sees little churn and false leaves it alone.
  explicit HeapRetention(bool enabled = true);
  ~HeapRetention();
  HeapRetention(const HeapRetention&) = delete;
  HeapRetention& operator=(const HeapRetention&) = delete;

  // Whether any HeapRetention is alive now.
  static bool active();

 private:
  bool enabled_;
};

}  // namespace comcl::training
