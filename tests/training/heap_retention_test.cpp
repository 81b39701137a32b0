// HeapRetention: large blocks come from the heap and stay there while a scope lives; afterwards they are
// mapped again and the retained memory goes back to the system. Observed through glibc's mallinfo2.
#include "comcl/training/heap_retention.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace comcl::training {
namespace {

#if defined(__GLIBC__)
constexpr std::size_t kMargin = 64u << 20;  // above glibc's largest dynamic mmap threshold (32 MiB)

// Bytes that malloc holds in mmap()ed blocks, and free bytes kept in its heaps.
std::size_t mappedBytes() {
  return mallinfo2().hblkhd;
}
std::size_t retainedFreeBytes() {
  return mallinfo2().fordblks;
}

// Resident set size of this process (Linux).
std::size_t residentBytes() {
  std::ifstream statm("/proc/self/statm");
  std::size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// A block the compiler cannot elide: written, and its address escapes.
void* touchedBlock(std::size_t size) {
  void* block = std::malloc(size);
  if (block) {
    std::memset(block, 1, size);
    asm volatile("" : : "g"(block) : "memory");
  }
  return block;
}

// Larger than all free memory malloc holds: no free chunk can serve it, so malloc must map it or grow the
// heap, whatever earlier code in this process left behind.
std::size_t freshBlockSize() {
  return retainedFreeBytes() + kMargin;
}

bool servedByMmap(std::size_t size) {
  const std::size_t before = mappedBytes();
  void* block = touchedBlock(size);
  EXPECT_NE(block, nullptr);
  const bool mapped = mappedBytes() >= before + size;
  std::free(block);
  return mapped;
}

TEST(HeapRetentionTest, KeepsLargeBlocksInTheHeapWhileAlive) {
  ASSERT_FALSE(HeapRetention::active());
  ASSERT_TRUE(servedByMmap(freshBlockSize())) << "without a scope glibc maps a block this large";
  malloc_trim(0);  // free pages left by earlier allocations must not hide the block's own
  std::size_t residentWithBlockFreed = 0;
  std::size_t block = 0;
  {
    const HeapRetention retention;
    EXPECT_TRUE(HeapRetention::active());
    const std::size_t before = residentBytes();
    block = freshBlockSize();
    EXPECT_FALSE(servedByMmap(block));
    // Freed, the block stays in the heap, its pages resident, for the next allocation.
    EXPECT_GE(retainedFreeBytes(), block);
    residentWithBlockFreed = residentBytes();
    EXPECT_GE(residentWithBlockFreed, before + block / 2);
  }
  EXPECT_FALSE(HeapRetention::active());
  EXPECT_LE(residentBytes() + block / 2, residentWithBlockFreed) << "the retained memory was not given back";
  EXPECT_TRUE(servedByMmap(freshBlockSize())) << "the thresholds were not restored";
}

TEST(HeapRetentionTest, NestedScopesRetainUntilTheLastEnds) {
  {
    const HeapRetention outer;
    {
      const HeapRetention inner;
      EXPECT_FALSE(servedByMmap(freshBlockSize()));
    }
    EXPECT_TRUE(HeapRetention::active());
    EXPECT_FALSE(servedByMmap(freshBlockSize()));
  }
  EXPECT_FALSE(HeapRetention::active());
  EXPECT_TRUE(servedByMmap(freshBlockSize()));
}

TEST(HeapRetentionTest, DisabledScopeChangesNothing) {
  const HeapRetention gpuRun(false);
  EXPECT_FALSE(HeapRetention::active());
  EXPECT_TRUE(servedByMmap(freshBlockSize()));
}
#else
TEST(HeapRetentionTest, KeepsLargeBlocksInTheHeapWhileAlive) {
  GTEST_SKIP() << "heap retention uses glibc's mallopt";
}
#endif

}  // namespace
}  // namespace comcl::training
