// Allocator settings for batch decoding in a process of our own (the comcl tool, benchmarks).
//
// Each decode allocates and frees a few buffers of 0.1-30 MB. With glibc's defaults, freeing them returns
// the memory to the kernel (trim) or unmaps it, and the next image faults it back in page by page: on the
// real radiographs that was half of the run time. Keeping freed memory in the process removes it. Not for
// the Orthanc plugin: a plugin must not change its host's allocator.
#pragma once

namespace comcl::imaging {

// Raises glibc's mmap and trim thresholds (64 MiB / 256 MiB); returns false where they cannot be set.
bool tuneAllocatorForBatchDecoding();

}  // namespace comcl::imaging
