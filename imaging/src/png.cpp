// PNG input/output through libpng.
//
// libpng reports errors by longjmp() to the setjmp() point. A longjmp must not skip C++ destructors, so the
// setjmp() and the libpng calls live in small functions with only trivial locals; the objects that own
// resources (file, libpng structs, buffers) live in their callers and are released normally.
#include "comcl/imaging/png.h"

#include <png.h>

#include <cerrno>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace comcl::imaging {
namespace {

// Where the error handler leaves libpng's message before jumping back.
struct PngError {
  char message[256];
};

[[noreturn]] void onPngError(png_structp png, png_const_charp message) {
  auto* error = static_cast<PngError*>(png_get_error_ptr(png));
  if (error != nullptr) {
    std::snprintf(error->message, sizeof error->message, "%s",
                  message != nullptr ? message : "unknown error");
  }
  png_longjmp(png, 1);
}

void onPngWarning(png_structp, png_const_charp) {}  // warnings (e.g. odd ancillary chunks) are not failures

struct FileCloser {
  void operator()(std::FILE* file) const { std::fclose(file); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

FilePtr openFile(const std::string& path, const char* mode, const char* what) {
  FilePtr file(std::fopen(path.c_str(), mode));
  if (!file) {
    throw std::runtime_error(std::string(what) + " " + path + ": " + std::strerror(errno));
  }
  return file;
}

// Owns a libpng read or write struct and its info struct.
class PngWriteStruct {
 public:
  explicit PngWriteStruct(PngError* error)
      : png_(png_create_write_struct(PNG_LIBPNG_VER_STRING, error, onPngError, onPngWarning)) {
    if (png_ != nullptr) {
      info_ = png_create_info_struct(png_);
    }
  }
  ~PngWriteStruct() { png_destroy_write_struct(&png_, &info_); }
  PngWriteStruct(const PngWriteStruct&) = delete;
  PngWriteStruct& operator=(const PngWriteStruct&) = delete;
  bool ok() const { return png_ != nullptr && info_ != nullptr; }
  png_structp png() const { return png_; }
  png_infop info() const { return info_; }

 private:
  png_structp png_ = nullptr;
  png_infop info_ = nullptr;
};

class PngReadStruct {
 public:
  explicit PngReadStruct(PngError* error)
      : png_(png_create_read_struct(PNG_LIBPNG_VER_STRING, error, onPngError, onPngWarning)) {
    if (png_ != nullptr) {
      info_ = png_create_info_struct(png_);
    }
  }
  ~PngReadStruct() { png_destroy_read_struct(&png_, &info_, nullptr); }
  PngReadStruct(const PngReadStruct&) = delete;
  PngReadStruct& operator=(const PngReadStruct&) = delete;
  bool ok() const { return png_ != nullptr && info_ != nullptr; }
  png_structp png() const { return png_; }
  png_infop info() const { return info_; }

 private:
  png_structp png_ = nullptr;
  png_infop info_ = nullptr;
};

// --- libpng calls guarded by setjmp (trivial locals only) ---

bool writeAll(png_structp png, png_infop info, std::FILE* file, png_uint_32 width, png_uint_32 height,
              int bitDepth, int colourType, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) {
    return false;
  }
  png_init_io(png, file);
  png_set_IHDR(png, info, width, height, bitDepth, colourType, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  return true;
}

struct ReadHeader {
  png_uint_32 width;
  png_uint_32 height;
  int channels;
  int bitDepth;
  png_size_t rowBytes;
};

bool readInfo(png_structp png, png_infop info, std::FILE* file, ReadHeader* header) {
  if (setjmp(png_jmpbuf(png))) {
    return false;
  }
  png_init_io(png, file);
  png_set_sig_bytes(png, 8);
  png_read_info(png, info);
  const int colourType = png_get_color_type(png, info);
  const int bitDepth = png_get_bit_depth(png, info);
  // Normalise every flavour to 8- or 16-bit grey or RGB samples.
  if (colourType == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(png);
  }
  if (colourType == PNG_COLOR_TYPE_GRAY && bitDepth < 8) {
    png_set_expand_gray_1_2_4_to_8(png);
  }
  if ((colourType & PNG_COLOR_MASK_ALPHA) != 0) {
    png_set_strip_alpha(png);
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  header->width = png_get_image_width(png, info);
  header->height = png_get_image_height(png, info);
  header->channels = png_get_channels(png, info);
  header->bitDepth = png_get_bit_depth(png, info);
  header->rowBytes = png_get_rowbytes(png, info);
  return true;
}

bool readRows(png_structp png, png_infop info, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) {
    return false;
  }
  png_read_image(png, rows);
  png_read_end(png, info);
  return true;
}

}  // namespace

void writePng(const std::string& path, const Image& image, int bitsPerSample) {
  if (image.channels != 1 && image.channels != 3) {
    throw std::runtime_error("cannot write " + path + ": PNG output needs 1 or 3 channels, got " +
                             std::to_string(image.channels));
  }
  if (image.width <= 0 || image.height <= 0) {
    throw std::runtime_error("cannot write " + path + ": empty image");
  }
  if (bitsPerSample != 8 && bitsPerSample != 16) {
    throw std::runtime_error("cannot write " + path + ": bits per sample must be 8 or 16");
  }
  // quantise() checks the buffer size and gives little-endian 16-bit samples; PNG wants big-endian.
  std::vector<std::uint8_t> bytes = quantise(image, bitsPerSample);
  if (bitsPerSample == 16) {
    for (std::size_t i = 0; i + 1 < bytes.size(); i += 2) {
      std::swap(bytes[i], bytes[i + 1]);
    }
  }
  const std::size_t rowBytes = static_cast<std::size_t>(image.width) *
                               static_cast<std::size_t>(image.channels) *
                               static_cast<std::size_t>(bitsPerSample / 8);
  std::vector<png_bytep> rows(static_cast<std::size_t>(image.height));
  for (std::size_t y = 0; y < rows.size(); ++y) {
    rows[y] = bytes.data() + y * rowBytes;
  }

  PngError error{};
  bool written = false;
  {
    FilePtr file = openFile(path, "wb", "cannot write");
    PngWriteStruct png(&error);
    if (!png.ok()) {
      throw std::runtime_error("cannot write " + path + ": out of memory for libpng");
    }
    const int colourType = image.channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB;
    written = writeAll(png.png(), png.info(), file.get(), static_cast<png_uint_32>(image.width),
                       static_cast<png_uint_32>(image.height), bitsPerSample, colourType, rows.data());
    if (written && std::fflush(file.get()) != 0) {
      std::snprintf(error.message, sizeof error.message, "%s", std::strerror(errno));
      written = false;
    }
  }
  if (!written) {
    std::remove(path.c_str());  // leave no truncated PNG behind
    throw std::runtime_error("cannot write " + path + ": " + error.message);
  }
}

Image readPng(const std::string& path) {
  FilePtr file = openFile(path, "rb", "cannot read");
  png_byte signature[8] = {};
  const std::size_t got = std::fread(signature, 1, sizeof signature, file.get());
  if (got != sizeof signature || png_sig_cmp(signature, 0, sizeof signature) != 0) {
    throw std::runtime_error("cannot read " + path + ": not a PNG file");
  }

  PngError error{};
  PngReadStruct png(&error);
  if (!png.ok()) {
    throw std::runtime_error("cannot read " + path + ": out of memory for libpng");
  }
  ReadHeader header{};
  if (!readInfo(png.png(), png.info(), file.get(), &header)) {
    throw std::runtime_error("cannot read " + path + ": " + error.message);
  }
  if (static_cast<std::uint64_t>(header.width) * header.height > kMaxImagePixels) {
    throw std::runtime_error("cannot read " + path + ": image too large (" + std::to_string(header.width) +
                             "x" + std::to_string(header.height) + ")");
  }
  const std::size_t bytesPerSample = header.bitDepth == 16 ? 2 : 1;
  if ((header.channels != 1 && header.channels != 3) || (header.bitDepth != 8 && header.bitDepth != 16) ||
      header.rowBytes != static_cast<std::size_t>(header.width) * static_cast<std::size_t>(header.channels) *
                             bytesPerSample) {
    throw std::runtime_error("cannot read " + path + ": unsupported PNG layout");
  }

  std::vector<std::uint8_t> bytes(header.rowBytes * header.height);
  std::vector<png_bytep> rows(header.height);
  for (std::size_t y = 0; y < rows.size(); ++y) {
    rows[y] = bytes.data() + y * header.rowBytes;
  }
  if (!readRows(png.png(), png.info(), rows.data())) {
    throw std::runtime_error("cannot read " + path + ": " + error.message);
  }

  const int width = static_cast<int>(header.width);
  const int height = static_cast<int>(header.height);
  if (bytesPerSample == 2) {
    // PNG stores 16-bit samples big-endian; dequantise() takes little-endian.
    for (std::size_t i = 0; i + 1 < bytes.size(); i += 2) {
      std::swap(bytes[i], bytes[i + 1]);
    }
  }
  return dequantise(bytes.data(), width, height, header.bitDepth, header.channels);
}

}  // namespace comcl::imaging
