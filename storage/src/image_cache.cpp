#include "comcl/storage/image_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

namespace comcl::storage {
namespace {

constexpr std::size_t kFileHeaderBytes = 4096;
constexpr std::size_t kSlotHeaderBytes = 32;
constexpr std::size_t kSlotAlignment = 64;
// Version 1: grey images. Version 2 adds a channel count, so that a build without colour support refuses a
// colour cache instead of misreading it; grey caches are still written as version 1.
constexpr std::uint32_t kGreyFileVersion = 1;
constexpr std::uint32_t kChannelsFileVersion = 2;
constexpr char kFileMagic[8] = {'C', 'O', 'M', 'C', 'L', 'I', 'M', 'G'};
constexpr char kSlotMagic[8] = {'C', 'O', 'M', 'C', 'L', 'S', 'L', 'T'};

// File header: magic[8], u32 version, u32 size, u32 bits, u32 slot header bytes, u64 stride, then
// version 1: u32 CRC-32 of the preceding 32 bytes; version 2: u32 channels, u32 CRC-32 of the preceding 36
// bytes; zeros up to 4096. Slot header: magic[8], u64 key,
// u64 pixel bytes, u32 CRC-32 of the pixels, u32 CRC-32 of the preceding 28 header bytes.
// All integers little-endian, written byte by byte so the file does not depend on the host.
void putU32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) {
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
  }
}
void putU64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    p[i] = static_cast<std::uint8_t>(v >> (8 * i));
  }
}
std::uint32_t getU32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) {
    v = (v << 8) | p[i];
  }
  return v;
}
std::uint64_t getU64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) {
    v = (v << 8) | p[i];
  }
  return v;
}

std::uint32_t crc(const void* data, std::size_t bytes) {
  return static_cast<std::uint32_t>(crc32_z(0, static_cast<const Bytef*>(data), bytes));
}

std::string errnoText(int error) {
  return std::strerror(error);
}

// Closes the descriptor unless released; keeps the constructor leak-free when it throws.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_;
};

// Returns 0 or the errno of the failed write.
int writeAll(int fd, const void* data, std::size_t bytes, off_t offset) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  while (bytes > 0) {
    const ssize_t n = ::pwrite(fd, p, bytes, offset);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno;
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
    offset += n;
  }
  return 0;
}

std::array<std::uint8_t, kFileHeaderBytes> makeFileHeader(const CacheFormat& format, std::size_t stride) {
  std::array<std::uint8_t, kFileHeaderBytes> h{};
  std::memcpy(h.data(), kFileMagic, sizeof kFileMagic);
  putU32(h.data() + 8, format.channels == 1 ? kGreyFileVersion : kChannelsFileVersion);
  putU32(h.data() + 12, static_cast<std::uint32_t>(format.size));
  putU32(h.data() + 16, static_cast<std::uint32_t>(format.bitsPerSample));
  putU32(h.data() + 20, static_cast<std::uint32_t>(kSlotHeaderBytes));
  putU64(h.data() + 24, stride);
  if (format.channels == 1) {
    putU32(h.data() + 32, crc(h.data(), 32));
  } else {
    putU32(h.data() + 32, static_cast<std::uint32_t>(format.channels));
    putU32(h.data() + 36, crc(h.data(), 36));
  }
  return h;
}

// Creates the file under a temporary name and links it into place, so that `path` never holds a partial
// header, and two processes creating it at once end up sharing one file.
void createFile(const std::string& path, const CacheFormat& format, std::size_t stride) {
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    throw CacheError("image cache " + path + ": cannot create " + tmp + ": " + errnoText(errno));
  }
  const auto header = makeFileHeader(format, stride);
  if (const int error = writeAll(fd.get(), header.data(), header.size(), 0)) {
    ::unlink(tmp.c_str());
    throw CacheError("image cache " + path + ": cannot write header: " + errnoText(error));
  }
  if (::fdatasync(fd.get()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    throw CacheError("image cache " + path + ": cannot sync header: " + errnoText(error));
  }
  const int linked = ::link(tmp.c_str(), path.c_str());
  const int linkError = errno;
  ::unlink(tmp.c_str());
  if (linked != 0 && linkError != EEXIST) {
    throw CacheError("image cache " + path + ": cannot create: " + errnoText(linkError));
  }
  // Make the new directory entry durable too.
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  UniqueFd dirFd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dirFd.get() >= 0) {
    ::fsync(dirFd.get());
  }
}

}  // namespace

// Reads and checks the file header of an open cache file; returns its format and the file size.
namespace {
CacheFormat readHeader(int fd, const std::string& path, std::size_t& fileSize) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    throw CacheError("image cache " + path + ": cannot stat: " + errnoText(errno));
  }
  if (static_cast<std::size_t>(st.st_size) < kFileHeaderBytes) {
    throw CacheError("image cache " + path + ": file of " + std::to_string(st.st_size) +
                     " bytes is too short to be a comcl image cache");
  }
  std::array<std::uint8_t, kFileHeaderBytes> header{};
  if (::pread(fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size())) {
    throw CacheError("image cache " + path + ": cannot read header: " + errnoText(errno));
  }
  if (std::memcmp(header.data(), kFileMagic, sizeof kFileMagic) != 0) {
    throw CacheError("image cache " + path + ": not a comcl image cache (bad magic)");
  }
  const std::uint32_t version = getU32(header.data() + 8);
  if (version != kGreyFileVersion && version != kChannelsFileVersion) {
    throw CacheError("image cache " + path + ": file format version " + std::to_string(version) +
                     ", this build reads versions " + std::to_string(kGreyFileVersion) + " and " +
                     std::to_string(kChannelsFileVersion));
  }
  const std::size_t checkedBytes = version == kGreyFileVersion ? 32 : 36;
  if (getU32(header.data() + checkedBytes) != crc(header.data(), checkedBytes)) {
    throw CacheError("image cache " + path + ": file header checksum mismatch");
  }
  CacheFormat found;
  found.channels = version == kGreyFileVersion ? 1 : static_cast<int>(getU32(header.data() + 32));
  if (found.channels != 1 && found.channels != 3)
    throw CacheError("image cache " + path + ": " + std::to_string(found.channels) +
                     " channels in the header (1 or 3)");
  found.size = static_cast<int>(getU32(header.data() + 12));
  found.bitsPerSample = static_cast<int>(getU32(header.data() + 16));
  const std::size_t stride =
      (kSlotHeaderBytes + found.imageBytes() + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment;
  if (getU32(header.data() + 20) != kSlotHeaderBytes || getU64(header.data() + 24) != stride) {
    throw CacheError("image cache " + path + ": slot layout in the header does not match its format");
  }
  fileSize = static_cast<std::size_t>(st.st_size);
  return found;
}
}  // namespace

std::string describe(const CacheFormat& f) {
  return std::to_string(f.size) + "x" + std::to_string(f.size) + " " + std::to_string(f.bitsPerSample) +
         "-bit " +
         (f.channels == 1   ? "grey"
          : f.channels == 3 ? "RGB"
                            : std::to_string(f.channels) + "-channel");
}

CacheFormat ImageCache::formatOf(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0)
    throw CacheError("image cache " + path + ": cannot open: " + errnoText(errno));
  std::size_t fileSize = 0;
  return readHeader(fd.get(), path, fileSize);
}

ImageCache::ImageCache(const std::string& path, CacheFormat format) : path_(path), format_(format) {
  if (format.size <= 0 || format.size > 65536 || (format.bitsPerSample != 8 && format.bitsPerSample != 16) ||
      (format.channels != 1 && format.channels != 3)) {
    throw CacheError("image cache " + path + ": unsupported format " + describe(format) +
                     " (size 1..65536, 8 or 16 bits, 1 or 3 channels)");
  }
  stride_ = (kSlotHeaderBytes + format.imageBytes() + kSlotAlignment - 1) / kSlotAlignment * kSlotAlignment;

  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0 && errno == ENOENT) {
    createFile(path, format, stride_);
    fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  }
  if (fd.get() < 0) {
    throw CacheError("image cache " + path + ": cannot open: " + errnoText(errno));
  }
  std::size_t fileSize = 0;
  const CacheFormat found = readHeader(fd.get(), path, fileSize);
  if (!(found == format)) {
    throw CacheError("image cache " + path + " holds " + describe(found) + " images, but " +
                     describe(format) + " images were requested");
  }
  const std::size_t length = fileSize;
  void* map = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED) {
    throw CacheError("image cache " + path + ": cannot map: " + errnoText(errno));
  }
  map_ = static_cast<std::uint8_t*>(map);
  mapLength_ = length;
  fd_ = fd.release();
}

ImageCache::~ImageCache() {
  if (map_) {
    ::munmap(map_, mapLength_);
  }
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

std::int64_t ImageCache::slotCount() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    throw CacheError("image cache " + path_ + ": cannot stat: " + errnoText(errno));
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  return size <= kFileHeaderBytes ? 0 : static_cast<std::int64_t>((size - kFileHeaderBytes) / stride_);
}

namespace {

void checkSlot(const std::string& path, std::int64_t slot, std::size_t stride) {
  const auto maxSlot = static_cast<std::int64_t>(
      (static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) - kFileHeaderBytes) / stride - 1);
  if (slot < 0 || slot > maxSlot) {
    throw CacheError("image cache " + path + ": slot " + std::to_string(slot) + " is out of range");
  }
}

std::size_t slotOffset(std::int64_t slot, std::size_t stride) {
  return kFileHeaderBytes + static_cast<std::size_t>(slot) * stride;
}

}  // namespace

void ImageCache::write(std::int64_t slot, std::uint64_t key, const void* pixels) {
  checkSlot(path_, slot, stride_);
  if (!pixels) {
    throw CacheError("image cache " + path_ + ": slot " + std::to_string(slot) + ": no pixels to write");
  }
  const std::size_t bytes = imageBytes();
  std::array<std::uint8_t, kSlotHeaderBytes> header{};
  std::memcpy(header.data(), kSlotMagic, sizeof kSlotMagic);
  putU64(header.data() + 8, key);
  putU64(header.data() + 16, bytes);
  putU32(header.data() + 24, crc(pixels, bytes));
  putU32(header.data() + 28, crc(header.data(), 28));
  static const std::array<std::uint8_t, kSlotAlignment> zeros{};

  // One positioned write of header, pixels and padding (the file grows as needed; concurrent writers to
  // other slots never interfere, so no lock is needed).
  std::array<iovec, 3> iov{{
      {header.data(), header.size()},
      {const_cast<void*>(pixels), bytes},  // iovec is not const-correct; pwritev only reads
      {const_cast<std::uint8_t*>(zeros.data()), stride_ - kSlotHeaderBytes - bytes},
  }};
  auto offset = static_cast<off_t>(slotOffset(slot, stride_));
  std::size_t first = 0;
  while (first < iov.size()) {
    const ssize_t n = ::pwritev(fd_, iov.data() + first, static_cast<int>(iov.size() - first), offset);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw CacheError("image cache " + path_ + ": slot " + std::to_string(slot) +
                       ": write failed: " + errnoText(errno));
    }
    offset += n;
    // A short write (rare: signals, disk full) continues where it stopped.
    auto left = static_cast<std::size_t>(n);
    while (first < iov.size() && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (first < iov.size()) {
      iov[first].iov_base = static_cast<std::uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
}

void ImageCache::flush() {
  if (::fdatasync(fd_) != 0) {
    throw CacheError("image cache " + path_ + ": fdatasync failed: " + errnoText(errno));
  }
}

const std::uint8_t* ImageCache::mappedSlot(std::int64_t slot) const {
  const std::size_t end = slotOffset(slot, stride_) + kSlotHeaderBytes + imageBytes();
  return end <= mapLength_ ? map_ + slotOffset(slot, stride_) : nullptr;
}

void ImageCache::ensureMapped(std::int64_t slot) const {
  std::unique_lock lock(mapMutex_);
  const std::size_t end = slotOffset(slot, stride_) + kSlotHeaderBytes + imageBytes();
  if (end <= mapLength_) {
    return;  // another reader remapped first
  }
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    throw CacheError("image cache " + path_ + ": cannot stat: " + errnoText(errno));
  }
  const auto length = static_cast<std::size_t>(st.st_size);
  if (length < end) {
    throw CacheError("image cache " + path_ + ": slot " + std::to_string(slot) +
                     ": beyond the end of the file (never written, or its write was torn; the file has " +
                     std::to_string(length <= kFileHeaderBytes ? 0 : (length - kFileHeaderBytes) / stride_) +
                     " complete slots)");
  }
  // Only ever grows: pointers handed out under the shared lock stay within the new mapping's range.
  void* map = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd_, 0);
  if (map == MAP_FAILED) {
    throw CacheError("image cache " + path_ + ": cannot map " + std::to_string(length) +
                     " bytes: " + errnoText(errno));
  }
  ::munmap(map_, mapLength_);
  map_ = static_cast<std::uint8_t*>(map);
  mapLength_ = length;
}

void ImageCache::verifiedCopy(const std::uint8_t* slotBytes, std::int64_t slot, std::uint64_t key,
                              void* dst) const {
  const auto fail = [&](const std::string& cause) {
    throw CacheError("image cache " + path_ + ": slot " + std::to_string(slot) + ": " + cause);
  };
  const std::uint8_t* header = slotBytes;
  if (std::all_of(header, header + kSlotHeaderBytes, [](std::uint8_t b) { return b == 0; })) {
    fail("never written (empty slot)");
  }
  if (std::memcmp(header, kSlotMagic, sizeof kSlotMagic) != 0) {
    fail("bad slot magic (not a written slot, or overwritten)");
  }
  if (getU32(header + 28) != crc(header, 28)) {
    fail("slot header checksum mismatch (torn or corrupt write)");
  }
  const std::uint64_t bytes = getU64(header + 16);
  if (bytes != imageBytes()) {
    fail("holds " + std::to_string(bytes) + " pixel bytes, expected " + std::to_string(imageBytes()));
  }
  const std::uint64_t storedKey = getU64(header + 8);
  if (storedKey != key) {
    fail("holds key " + std::to_string(storedKey) + ", expected key " + std::to_string(key));
  }
  // Checksum the copy rather than the mapping: the caller gets exactly the bytes that were verified.
  std::memcpy(dst, slotBytes + kSlotHeaderBytes, imageBytes());
  if (crc(dst, imageBytes()) != getU32(header + 24)) {
    fail("pixel checksum mismatch (torn or corrupt write)");
  }
}

void ImageCache::read(std::int64_t slot, std::uint64_t key, void* dst) const {
  checkSlot(path_, slot, stride_);
  for (;;) {
    {
      std::shared_lock lock(mapMutex_);
      if (const std::uint8_t* bytes = mappedSlot(slot)) {
        verifiedCopy(bytes, slot, key, dst);
        return;
      }
    }
    ensureMapped(slot);  // throws when the slot lies beyond the file
  }
}

void ImageCache::readBatch(const std::vector<std::int64_t>& slots, const std::vector<std::uint64_t>& keys,
                           void* dst) const {
  if (slots.size() != keys.size()) {
    throw CacheError("image cache " + path_ + ": readBatch got " + std::to_string(slots.size()) +
                     " slots and " + std::to_string(keys.size()) + " keys");
  }
  if (slots.empty()) {
    return;
  }
  for (std::int64_t slot : slots) {
    checkSlot(path_, slot, stride_);
  }
  const std::int64_t last = *std::max_element(slots.begin(), slots.end());
  auto* out = static_cast<std::uint8_t*>(dst);
  for (;;) {
    {
      std::shared_lock lock(mapMutex_);
      if (mappedSlot(last)) {
        for (std::size_t i = 0; i < slots.size(); ++i) {
          verifiedCopy(mappedSlot(slots[i]), slots[i], keys[i], out + i * imageBytes());
        }
        return;
      }
    }
    ensureMapped(last);
  }
}

}  // namespace comcl::storage
