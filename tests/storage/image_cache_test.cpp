#include "comcl/storage/image_cache.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "temp_dir.h"

namespace comcl::storage {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::TempDir;

constexpr std::size_t kFileHeader = 4096;

std::vector<std::uint8_t> pixels(const ImageCache& cache, unsigned seed) {
  std::vector<std::uint8_t> p(cache.imageBytes());
  std::mt19937 random(seed);
  for (auto& b : p) {
    b = static_cast<std::uint8_t>(random());
  }
  return p;
}

std::string cacheError(const std::function<void()>& f) {
  try {
    f();
  } catch (const CacheError& e) {
    return e.what();
  }
  return "(no CacheError)";
}

// Overwrites bytes of the file in place, as a crash or a bad disk would.
void patchFile(const std::string& path, std::size_t offset, const std::vector<std::uint8_t>& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

class ImageCacheTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_.file("images.cache"); }
  TempDir dir_;
};

TEST_F(ImageCacheTest, RoundTrip8Bit) {
  ImageCache cache(path(), {16, 8});
  EXPECT_EQ(cache.imageBytes(), 256u);
  EXPECT_EQ(cache.slotStride() % 64, 0u);
  EXPECT_GE(cache.slotStride(), 256u + 32u);
  EXPECT_EQ(cache.slotCount(), 0);
  const auto a = pixels(cache, 1);
  const auto b = pixels(cache, 2);
  cache.write(0, 100, a.data());
  cache.write(1, 101, b.data());
  cache.flush();
  EXPECT_EQ(cache.slotCount(), 2);
  std::vector<std::uint8_t> out(cache.imageBytes());
  cache.read(1, 101, out.data());
  EXPECT_EQ(out, b);
  cache.read(0, 100, out.data());
  EXPECT_EQ(out, a);
}

TEST_F(ImageCacheTest, RoundTrip16Bit) {
  ImageCache cache(path(), {32, 16});
  EXPECT_EQ(cache.imageBytes(), 32u * 32u * 2u);
  std::vector<std::uint16_t> in(32 * 32);
  for (std::size_t i = 0; i < in.size(); ++i) {
    in[i] = static_cast<std::uint16_t>(i * 61 + 4000);
  }
  cache.write(3, 7, in.data());
  std::vector<std::uint16_t> out(in.size());
  cache.read(3, 7, out.data());
  EXPECT_EQ(out, in);
  EXPECT_EQ(cache.slotCount(), 4);  // room for slots 0..3, though 0..2 are holes
}

TEST_F(ImageCacheTest, ReadBatchCopiesInTheOrderGiven) {
  ImageCache cache(path(), {8, 8});
  std::vector<std::vector<std::uint8_t>> images;
  for (int slot = 0; slot < 5; ++slot) {
    images.push_back(pixels(cache, static_cast<unsigned>(slot) + 10));
    cache.write(slot, static_cast<std::uint64_t>(slot) * 10, images.back().data());
  }
  const std::vector<std::int64_t> slots = {4, 0, 2, 2};
  const std::vector<std::uint64_t> keys = {40, 0, 20, 20};
  std::vector<std::uint8_t> out(slots.size() * cache.imageBytes() + 1, 0xEE);
  cache.readBatch(slots, keys, out.data());
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const auto& expected = images[static_cast<std::size_t>(slots[i])];
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(),
                           out.begin() + static_cast<std::ptrdiff_t>(i * cache.imageBytes())))
        << "image " << i;
  }
  EXPECT_EQ(out.back(), 0xEE);  // nothing beyond N * imageBytes() is touched
  EXPECT_NO_THROW(cache.readBatch({}, {}, nullptr));
  EXPECT_THROW(cache.readBatch({0}, {}, out.data()), CacheError);
}

TEST_F(ImageCacheTest, ReadBatchFailsOnABadSlot) {
  ImageCache cache(path(), {8, 8});
  const auto a = pixels(cache, 1);
  cache.write(0, 1, a.data());
  cache.write(1, 2, a.data());
  std::vector<std::uint8_t> out(2 * cache.imageBytes());
  EXPECT_THAT(cacheError([&] { cache.readBatch({0, 1}, {1, 3}, out.data()); }), HasSubstr("slot 1"));
  EXPECT_THAT(cacheError([&] {
                cache.readBatch({0, 9}, {1, 2}, out.data());
              }),
              AllOf(HasSubstr("slot 9"), HasSubstr("beyond the end")));
}

TEST_F(ImageCacheTest, VerificationErrorsNameSlotAndCause) {
  ImageCache cache(path(), {8, 8});
  const auto a = pixels(cache, 1);
  cache.write(2, 55, a.data());
  std::vector<std::uint8_t> out(cache.imageBytes());
  EXPECT_THAT(cacheError([&] { cache.read(2, 56, out.data()); }),
              AllOf(HasSubstr("slot 2"), HasSubstr("key 55"), HasSubstr("expected key 56")));
  EXPECT_THAT(cacheError([&] { cache.read(1, 55, out.data()); }),
              AllOf(HasSubstr("slot 1"), HasSubstr("never written")));
  EXPECT_THAT(cacheError([&] { cache.read(3, 55, out.data()); }),
              AllOf(HasSubstr("slot 3"), HasSubstr("beyond the end")));
  EXPECT_THAT(cacheError([&] { cache.read(-1, 55, out.data()); }), HasSubstr("slot -1"));
  EXPECT_THROW(cache.write(-1, 1, a.data()), CacheError);
}

TEST_F(ImageCacheTest, ReusedSlotReadsTheNewImageUnderTheNewKey) {
  ImageCache cache(path(), {8, 8});
  const auto a = pixels(cache, 1);
  const auto b = pixels(cache, 2);
  cache.write(0, 1, a.data());
  cache.write(0, 2, b.data());
  std::vector<std::uint8_t> out(cache.imageBytes());
  cache.read(0, 2, out.data());
  EXPECT_EQ(out, b);
  EXPECT_THROW(cache.read(0, 1, out.data()), CacheError);
}

TEST_F(ImageCacheTest, ReopenedCacheKeepsItsImages) {
  std::vector<std::uint8_t> a;
  {
    ImageCache cache(path(), {64, 16});
    a = pixels(cache, 5);
    cache.write(0, 11, a.data());
    cache.write(1, 12, a.data());
    cache.flush();
  }
  ImageCache cache(path(), {64, 16});
  EXPECT_EQ(cache.slotCount(), 2);
  std::vector<std::uint8_t> out(cache.imageBytes());
  cache.read(0, 11, out.data());
  EXPECT_EQ(out, a);
  const auto b = pixels(cache, 6);
  cache.write(2, 13, b.data());  // appending after reopening
  cache.read(2, 13, out.data());
  EXPECT_EQ(out, b);
}

TEST_F(ImageCacheTest, OpeningWithAnotherFormatNamesBoth) {
  { ImageCache cache(path(), {256, 8}); }
  EXPECT_THAT(cacheError([&] {
                ImageCache(path(), {512, 16});
              }),
              AllOf(HasSubstr("256x256 8-bit"), HasSubstr("512x512 16-bit")));
  EXPECT_THAT(cacheError([&] {
                ImageCache(path(), {256, 16});
              }),
              AllOf(HasSubstr("256x256 8-bit"), HasSubstr("256x256 16-bit")));
}

TEST_F(ImageCacheTest, ColourCacheKeepsThreeChannelsAndRefusesAGreyOpen) {
  {
    ImageCache cache(path(), {16, 8, 3});
    EXPECT_EQ(cache.imageBytes(), 16u * 16u * 3u);
    const auto a = pixels(cache, 7);
    cache.write(0, 21, a.data());
    cache.flush();
  }
  const CacheFormat found = ImageCache::formatOf(path());
  EXPECT_EQ(found.channels, 3);
  EXPECT_EQ(found.size, 16);
  ImageCache reopened(path(), found);
  std::vector<std::uint8_t> out(reopened.imageBytes());
  reopened.read(0, 21, out.data());
  ImageCache reference(dir_.file("reference.cache"), {16, 8, 3});
  EXPECT_EQ(out, pixels(reference, 7));
  EXPECT_THAT(cacheError([&] {
                ImageCache(path(), {16, 8});
              }),
              AllOf(HasSubstr("16x16 8-bit RGB"), HasSubstr("16x16 8-bit grey")));
  EXPECT_THAT(cacheError([&] {
                ImageCache(dir_.file("two.cache"), {16, 8, 2});
              }),
              HasSubstr("1 or 3 channels"));
}

TEST_F(ImageCacheTest, GreyCachesKeepTheVersionOneHeader) {
  { ImageCache cache(path(), {16, 8}); }
  std::ifstream f(path(), std::ios::binary);
  std::vector<char> header(12);
  f.read(header.data(), 12);
  EXPECT_EQ(static_cast<int>(header[8]), 1);  // older builds still open grey caches written by this one
  EXPECT_EQ(ImageCache::formatOf(path()).channels, 1);
}

TEST_F(ImageCacheTest, RefusesFilesThatAreNotACacheAndBadFormats) {
  {
    std::ofstream f(path(), std::ios::binary);
    f << std::string(8192, 'x');
  }
  EXPECT_THAT(cacheError([&] { ImageCache(path(), {8, 8}); }), HasSubstr("not a comcl image cache"));
  {
    std::ofstream f(dir_.file("short"), std::ios::binary);
    f << "COMCLIMG";
  }
  EXPECT_THAT(cacheError([&] { ImageCache(dir_.file("short"), {8, 8}); }), HasSubstr("too short"));
  EXPECT_THROW(ImageCache(dir_.file("bits"), {8, 12}), CacheError);
  EXPECT_THROW(ImageCache(dir_.file("size"), {0, 8}), CacheError);
  EXPECT_THROW(ImageCache(dir_.path().string() + "/no/such/dir/cache", {8, 8}), CacheError);
}

TEST_F(ImageCacheTest, TornLastSlotIsAnErrorAndEarlierSlotsReadFine) {
  std::vector<std::uint8_t> a;
  std::size_t stride = 0;
  {
    ImageCache cache(path(), {32, 8});
    a = pixels(cache, 3);
    stride = cache.slotStride();
    for (int slot = 0; slot < 3; ++slot) {
      cache.write(slot, static_cast<std::uint64_t>(slot), a.data());
    }
  }
  // A crash in the middle of appending slot 2: only its header and part of its pixels reached the disk.
  std::filesystem::resize_file(path(), kFileHeader + 2 * stride + 32 + 100);

  ImageCache cache(path(), {32, 8});
  EXPECT_EQ(cache.slotCount(), 2);
  std::vector<std::uint8_t> out(cache.imageBytes());
  EXPECT_THAT(cacheError([&] { cache.read(2, 2, out.data()); }), HasSubstr("slot 2"));
  cache.read(0, 0, out.data());
  EXPECT_EQ(out, a);
  cache.read(1, 1, out.data());
  EXPECT_EQ(out, a);
  // Writing the slot again repairs it.
  cache.write(2, 2, a.data());
  cache.read(2, 2, out.data());
  EXPECT_EQ(out, a);
  EXPECT_EQ(cache.slotCount(), 3);
}

TEST_F(ImageCacheTest, TornPixelsWithinTheFileFailTheChecksum) {
  std::vector<std::uint8_t> a;
  std::size_t stride = 0;
  {
    ImageCache cache(path(), {32, 8});
    a = pixels(cache, 4);
    stride = cache.slotStride();
    for (int slot = 0; slot < 3; ++slot) {
      cache.write(slot, static_cast<std::uint64_t>(slot), a.data());
    }
  }
  // Slot 1's pixels half old, half zero (a torn overwrite), and one flipped byte in slot 2's pixels.
  patchFile(path(), kFileHeader + stride + 32 + 512, std::vector<std::uint8_t>(512, 0));
  patchFile(path(), kFileHeader + 2 * stride + 32 + 7, {static_cast<std::uint8_t>(a[7] ^ 0x10)});

  ImageCache cache(path(), {32, 8});
  std::vector<std::uint8_t> out(cache.imageBytes());
  EXPECT_THAT(cacheError([&] { cache.read(1, 1, out.data()); }),
              AllOf(HasSubstr("slot 1"), HasSubstr("checksum")));
  EXPECT_THAT(cacheError([&] { cache.read(2, 2, out.data()); }),
              AllOf(HasSubstr("slot 2"), HasSubstr("checksum")));
  cache.read(0, 0, out.data());
  EXPECT_EQ(out, a);
}

TEST_F(ImageCacheTest, CorruptSlotHeaderIsDetected) {
  std::size_t stride = 0;
  {
    ImageCache cache(path(), {8, 8});
    stride = cache.slotStride();
    const auto a = pixels(cache, 1);
    cache.write(0, 1, a.data());
    cache.write(1, 2, a.data());
  }
  patchFile(path(), kFileHeader + stride + 8, {3});  // key byte of slot 1
  patchFile(path(), kFileHeader + 0, {'X'});         // magic of slot 0
  ImageCache cache(path(), {8, 8});
  std::vector<std::uint8_t> out(cache.imageBytes());
  EXPECT_THAT(cacheError([&] { cache.read(1, 2, out.data()); }),
              AllOf(HasSubstr("slot 1"), HasSubstr("header")));
  EXPECT_THAT(cacheError([&] { cache.read(0, 1, out.data()); }),
              AllOf(HasSubstr("slot 0"), HasSubstr("magic")));
}

TEST_F(ImageCacheTest, ConcurrentWritersToDifferentSlotsAndReaders) {
  ImageCache cache(path(), {64, 8});
  constexpr int kWriters = 4;
  constexpr int kPerWriter = 64;
  std::vector<std::vector<std::uint8_t>> images;
  for (int i = 0; i < kWriters * kPerWriter; ++i) {
    images.push_back(pixels(cache, static_cast<unsigned>(i)));
  }
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      std::vector<std::uint8_t> out(cache.imageBytes());
      for (int i = 0; i < kPerWriter; ++i) {
        const int slot = i * kWriters + w;  // interleaved, so the file grows from several threads
        cache.write(slot, static_cast<std::uint64_t>(slot) + 1000,
                    images[static_cast<std::size_t>(slot)].data());
        // Read back at once: the mapping has to grow under concurrent readers.
        cache.read(slot, static_cast<std::uint64_t>(slot) + 1000, out.data());
        EXPECT_EQ(out, images[static_cast<std::size_t>(slot)]);
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  cache.flush();
  std::vector<std::int64_t> slots;
  std::vector<std::uint64_t> keys;
  for (int slot = kWriters * kPerWriter - 1; slot >= 0; --slot) {
    slots.push_back(slot);
    keys.push_back(static_cast<std::uint64_t>(slot) + 1000);
  }
  std::vector<std::uint8_t> all(slots.size() * cache.imageBytes());
  cache.readBatch(slots, keys, all.data());
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const auto& expected = images[static_cast<std::size_t>(slots[i])];
    ASSERT_EQ(std::memcmp(all.data() + i * cache.imageBytes(), expected.data(), expected.size()), 0) << i;
  }
  EXPECT_EQ(cache.slotCount(), kWriters * kPerWriter);
}

TEST_F(ImageCacheTest, TwoHandlesOnOneFileSeeEachOthersWrites) {
  ImageCache writer(path(), {8, 8});
  ImageCache reader(path(), {8, 8});
  const auto a = pixels(writer, 9);
  writer.write(5, 9, a.data());
  std::vector<std::uint8_t> out(reader.imageBytes());
  reader.read(5, 9, out.data());
  EXPECT_EQ(out, a);
}

}  // namespace
}  // namespace comcl::storage
