// Fixed-size preprocessed images in one memory-mapped file, addressed by slot number from the index.
//
// Layout: a 4096-byte file header (magic, format), then slots of `slotStride()` bytes. Each slot holds a
// 32-byte header (magic, CRC-32 of the pixels, key, pixel byte count) followed by the pixels of one image,
// row-major with interleaved channels (grey, or RGB for colour photographs such as fundus images),
// little-endian for 16-bit. A slot is written with one pwrite and is only
// referenced from the index after it is written, and a referenced slot is never overwritten, so a torn write
// (crash, power loss) can only damage a slot that nothing points to yet; reads verify magic, key and CRC.
#pragma once

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace comcl::storage {

class CacheError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CacheFormat {
  int size = 256;         // images are size x size pixels
  int bitsPerSample = 8;  // 8 or 16
  int channels = 1;       // 1 (grey: radiographs) or 3 (RGB: fundus and other colour photographs)
  std::size_t imageBytes() const {
    return static_cast<std::size_t>(size) * static_cast<std::size_t>(size) *
           static_cast<std::size_t>(channels) * (bitsPerSample == 16 ? 2u : 1u);
  }
  bool operator==(const CacheFormat& o) const {
    return size == o.size && bitsPerSample == o.bitsPerSample && channels == o.channels;
  }
};

// "256x256 8-bit grey", "512x512 16-bit RGB".
std::string describe(const CacheFormat& format);

class ImageCache {
 public:
  // Opens the cache file, creating it with `format` if it does not exist. An existing file must have the
  // same format, otherwise CacheError names both formats.
  ImageCache(const std::string& path, CacheFormat format);
  // The format recorded in an existing cache file (CacheError if it is missing or not a comcl cache).
  static CacheFormat formatOf(const std::string& path);
  ~ImageCache();
  ImageCache(const ImageCache&) = delete;
  ImageCache& operator=(const ImageCache&) = delete;

  const CacheFormat& format() const { return format_; }
  std::size_t imageBytes() const { return format_.imageBytes(); }
  std::size_t slotStride() const { return stride_; }
  const std::string& path() const { return path_; }
  // Number of complete slots the file has room for (written or not); a torn last slot is not counted.
  std::int64_t slotCount() const;

  // Writes `imageBytes()` bytes of pixels into `slot` under `key` (storage::cacheKey(resourceId), see
  // cache_key.h). Thread-safe. Call flush() before the index refers to the slot, so that a crash can never
  // leave a committed row pointing at pixels that did not reach the disk.
  void write(std::int64_t slot, std::uint64_t key, const void* pixels);
  // Makes every completed write durable (fdatasync).
  void flush();

  // Copies one verified image into dst (imageBytes() bytes). Throws CacheError naming the slot if it was
  // never written, lies beyond the end of the file (e.g. a torn append), holds another key, or fails its
  // checksum.
  void read(std::int64_t slot, std::uint64_t key, void* dst) const;
  // Copies N verified images into dst (N * imageBytes() bytes), in the order given, straight from the
  // mapping.
  void readBatch(const std::vector<std::int64_t>& slots, const std::vector<std::uint64_t>& keys,
                 void* dst) const;

 private:
  const std::uint8_t* mappedSlot(std::int64_t slot) const;  // caller holds mapMutex_ (shared)
  void ensureMapped(std::int64_t slot) const;
  void verifiedCopy(const std::uint8_t* slotBytes, std::int64_t slot, std::uint64_t key, void* dst) const;

  std::string path_;
  CacheFormat format_;
  std::size_t stride_ = 0;
  int fd_ = -1;
  mutable std::shared_mutex mapMutex_;
  mutable std::uint8_t* map_ = nullptr;
  mutable std::size_t mapLength_ = 0;
};

}  // namespace comcl::storage
