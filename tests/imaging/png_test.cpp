#include "comcl/imaging/png.h"

#include <gtest/gtest.h>
#include <png.h>

#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "temp_dir.h"

namespace comcl::imaging {
namespace {

namespace fs = std::filesystem;
using comcl::testing::TempDir;

// Random samples snapped to the levels of the given bit depth, so a PNG round trip must be exact.
Image quantisedRandomImage(int width, int height, int channels, int bits, unsigned seed) {
  Image image(width, height, channels);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  for (float& v : image.pixels) {
    v = dist(rng);
  }
  image.pixels[0] = 0.0f;
  image.pixels[1] = 1.0f;
  const std::vector<std::uint8_t> bytes = quantise(image, bits);
  return dequantise(bytes.data(), width, height, bits, channels);
}

void expectRoundTrip(const TempDir& dir, int channels, int bits) {
  const Image image =
      quantisedRandomImage(53, 31, channels, bits, static_cast<unsigned>(channels * 100 + bits));
  const std::string path =
      dir.file("round-" + std::to_string(channels) + "-" + std::to_string(bits) + ".png");
  writePng(path, image, bits);
  const Image back = readPng(path);
  EXPECT_EQ(back.width, image.width);
  EXPECT_EQ(back.height, image.height);
  EXPECT_EQ(back.channels, channels);
  EXPECT_EQ(back.pixels, image.pixels) << channels << " channels, " << bits << " bits";
}

// Independent reader: the raw bytes and header of a PNG, straight from libpng without transforms.
struct RawPng {
  png_uint_32 width = 0;
  png_uint_32 height = 0;
  int bitDepth = 0;
  int colourType = 0;
  std::vector<std::uint8_t> bytes;
};

RawPng readRaw(const std::string& path) {
  RawPng raw;
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    ADD_FAILURE() << "cannot open " << path;
    return raw;
  }
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(file);
    ADD_FAILURE() << "libpng failed on " << path;
    return raw;
  }
  png_init_io(png, file);
  png_read_png(png, info, PNG_TRANSFORM_IDENTITY, nullptr);
  raw.width = png_get_image_width(png, info);
  raw.height = png_get_image_height(png, info);
  raw.bitDepth = png_get_bit_depth(png, info);
  raw.colourType = png_get_color_type(png, info);
  const png_size_t rowBytes = png_get_rowbytes(png, info);
  png_bytepp rows = png_get_rows(png, info);
  for (png_uint_32 y = 0; y < raw.height; ++y) {
    raw.bytes.insert(raw.bytes.end(), rows[y], rows[y] + rowBytes);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(file);
  return raw;
}

// Independent writer for the PNG flavours writePng never produces (palette, alpha, low bit depths).
void writeRaw(const std::string& path, png_uint_32 width, png_uint_32 height, int bitDepth, int colourType,
              const std::vector<std::uint8_t>& bytes, const std::vector<png_color>& palette = {}) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  const std::size_t rowBytes = bytes.size() / height;
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) {
    rows[y] = const_cast<png_bytep>(bytes.data()) + y * rowBytes;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(file);
    FAIL() << "libpng failed writing " << path;
  }
  png_init_io(png, file);
  png_set_IHDR(png, info, width, height, bitDepth, colourType, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!palette.empty()) {
    png_set_PLTE(png, info, palette.data(), static_cast<int>(palette.size()));
  }
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  std::fclose(file);
}

TEST(Png, RoundTripGrey8) {
  TempDir dir;
  expectRoundTrip(dir, 1, 8);
}

TEST(Png, RoundTripGrey16) {
  TempDir dir;
  expectRoundTrip(dir, 1, 16);
}

TEST(Png, RoundTripRgb8) {
  TempDir dir;
  expectRoundTrip(dir, 3, 8);
}

TEST(Png, RoundTripRgb16) {
  TempDir dir;
  expectRoundTrip(dir, 3, 16);
}

TEST(Png, SixteenBitIsBigEndianInTheFile) {
  TempDir dir;
  Image image(2, 1);
  image.pixels = {258.0f / 65535.0f, 1.0f};  // 0x0102, 0xffff
  const std::string path = dir.file("be.png");
  writePng(path, image, 16);
  const RawPng raw = readRaw(path);
  EXPECT_EQ(raw.bitDepth, 16);
  EXPECT_EQ(raw.colourType, PNG_COLOR_TYPE_GRAY);
  EXPECT_EQ(raw.bytes, (std::vector<std::uint8_t>{0x01, 0x02, 0xff, 0xff}));
}

TEST(Png, WritesTheRequestedFormat) {
  TempDir dir;
  Image rgb(3, 2, 3);
  rgb.at(2, 1, 1) = 1.0f;
  const std::string path = dir.file("rgb.png");
  writePng(path, rgb);
  const RawPng raw = readRaw(path);
  EXPECT_EQ(raw.width, 3u);
  EXPECT_EQ(raw.height, 2u);
  EXPECT_EQ(raw.bitDepth, 8);
  EXPECT_EQ(raw.colourType, PNG_COLOR_TYPE_RGB);
  ASSERT_EQ(raw.bytes.size(), 18u);
  EXPECT_EQ(raw.bytes[(1 * 3 + 2) * 3 + 1], 255);
}

TEST(Png, ReadsGreyAlphaDroppingAlpha) {
  TempDir dir;
  const std::string path = dir.file("ga.png");
  writeRaw(path, 2, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA, {10, 0, 200, 255});
  const Image image = readPng(path);
  EXPECT_EQ(image.channels, 1);
  EXPECT_EQ(image.pixels, (std::vector<float>{10.0f / 255.0f, 200.0f / 255.0f}));
}

TEST(Png, ReadsRgbaDroppingAlpha) {
  TempDir dir;
  const std::string path = dir.file("rgba.png");
  writeRaw(path, 1, 2, 8, PNG_COLOR_TYPE_RGB_ALPHA, {255, 0, 51, 0, 0, 255, 0, 128});
  const Image image = readPng(path);
  EXPECT_EQ(image.channels, 3);
  EXPECT_EQ(image.width, 1);
  EXPECT_EQ(image.height, 2);
  EXPECT_EQ(image.pixels, (std::vector<float>{1.0f, 0.0f, 51.0f / 255.0f, 0.0f, 1.0f, 0.0f}));
}

TEST(Png, ReadsSixteenBitRgbaDroppingAlpha) {
  TempDir dir;
  const std::string path = dir.file("rgba16.png");
  writeRaw(path, 1, 1, 16, PNG_COLOR_TYPE_RGB_ALPHA, {0x01, 0x02, 0xff, 0xff, 0x00, 0x00, 0x12, 0x34});
  const Image image = readPng(path);
  EXPECT_EQ(image.channels, 3);
  EXPECT_EQ(image.pixels, (std::vector<float>{258.0f / 65535.0f, 1.0f, 0.0f}));
}

TEST(Png, ExpandsPalette) {
  TempDir dir;
  const std::string path = dir.file("palette.png");
  const std::vector<png_color> palette = {{0, 0, 0}, {255, 0, 0}, {0, 51, 255}};
  writeRaw(path, 3, 1, 8, PNG_COLOR_TYPE_PALETTE, {2, 1, 0}, palette);
  const Image image = readPng(path);
  EXPECT_EQ(image.channels, 3);
  EXPECT_EQ(image.pixels,
            (std::vector<float>{0.0f, 51.0f / 255.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}));
}

TEST(Png, ExpandsLowBitDepthGrey) {
  TempDir dir;
  const std::string path = dir.file("grey1.png");
  writeRaw(path, 8, 1, 1, PNG_COLOR_TYPE_GRAY, {0xa5});  // 1010 0101
  const Image image = readPng(path);
  EXPECT_EQ(image.channels, 1);
  EXPECT_EQ(image.pixels, (std::vector<float>{1, 0, 1, 0, 0, 1, 0, 1}));
}

TEST(Png, NonPngFileThrowsWithPath) {
  TempDir dir;
  const std::string path = dir.file("not-a-png.png");
  std::ofstream(path) << "this is plain text, not an image";
  try {
    readPng(path);
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("not a PNG"), std::string::npos) << message;
  }
}

TEST(Png, TruncatedFileThrows) {
  TempDir dir;
  const std::string path = dir.file("truncated.png");
  writePng(path, quantisedRandomImage(64, 64, 1, 8, 3), 8);
  fs::resize_file(path, fs::file_size(path) / 2);
  try {
    readPng(path);
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_GT(message.size(), path.size() + 15) << message;  // a reason follows the path
  }
}

TEST(Png, MissingFileThrows) {
  TempDir dir;
  EXPECT_THROW(readPng(dir.file("missing.png")), std::runtime_error);
}

TEST(Png, WriteFailuresThrow) {
  TempDir dir;
  const Image image(4, 4);
  try {
    writePng(dir.file("no-such-dir/out.png"), image);
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("no-such-dir/out.png"), std::string::npos) << error.what();
  }
  EXPECT_THROW(writePng(dir.file("bits.png"), image, 12), std::runtime_error);
  EXPECT_THROW(writePng(dir.file("channels.png"), Image(4, 4, 2)), std::runtime_error);
  EXPECT_THROW(writePng(dir.file("empty.png"), Image()), std::runtime_error);
  EXPECT_FALSE(fs::exists(dir.file("bits.png")));
}

}  // namespace
}  // namespace comcl::imaging
