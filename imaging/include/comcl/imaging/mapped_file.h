// A read-only memory mapping of a whole file (RAII). Decoding reads DICOM files through it: the bytes come
// straight from the page cache, without a zero-filled buffer and a copy per file.
#pragma once

#include <cstddef>
#include <string>

namespace comcl::imaging {

class MappedFile {
 public:
  // Maps `path`; ok() is false (and error() says why) when it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  const void* data() const { return data_; }  // nullptr for an empty file
  std::size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  std::string error_;
};

}  // namespace comcl::imaging
