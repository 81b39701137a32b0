#include "comcl/imaging/image.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "random_image.h"

namespace comcl::imaging {
namespace {

using testing::randomImage;

TEST(ImageQuantise, RoundTrip8BitWithinHalfAStep) {
  const Image image = randomImage(37, 23, 1, 1);
  const std::vector<std::uint8_t> bytes = quantise(image, 8);
  ASSERT_EQ(bytes.size(), image.pixels.size());
  const Image back = dequantise(bytes.data(), image.width, image.height, 8);
  ASSERT_EQ(back.width, image.width);
  ASSERT_EQ(back.height, image.height);
  ASSERT_EQ(back.channels, 1);
  for (std::size_t i = 0; i < image.pixels.size(); ++i) {
    EXPECT_LE(std::abs(back.pixels[i] - image.pixels[i]), 0.5 / 255.0 + 1e-6) << "sample " << i;
  }
}

TEST(ImageQuantise, RoundTrip16BitWithinHalfAStep) {
  const Image image = randomImage(41, 19, 1, 2);
  const std::vector<std::uint8_t> bytes = quantise(image, 16);
  ASSERT_EQ(bytes.size(), 2 * image.pixels.size());
  const Image back = dequantise(bytes.data(), image.width, image.height, 16);
  for (std::size_t i = 0; i < image.pixels.size(); ++i) {
    EXPECT_LE(std::abs(back.pixels[i] - image.pixels[i]), 0.5 / 65535.0 + 1e-7) << "sample " << i;
  }
}

TEST(ImageQuantise, RoundsToNearestAndClamps) {
  Image image(7, 1);
  image.pixels = {0.0f, 1.0f, 0.5f, 0.1f / 255.0f, 0.6f / 255.0f, -0.5f, 1.5f};
  const std::vector<std::uint8_t> bytes = quantise(image, 8);
  const std::vector<std::uint8_t> expected = {0, 255, 128, 0, 1, 0, 255};
  EXPECT_EQ(bytes, expected);
}

TEST(ImageQuantise, NanBecomesZero) {
  Image image(2, 1);
  image.pixels = {std::numeric_limits<float>::quiet_NaN(), 1.0f};
  EXPECT_EQ(quantise(image, 8), (std::vector<std::uint8_t>{0, 255}));
  EXPECT_EQ(quantise(image, 16), (std::vector<std::uint8_t>{0, 0, 0xff, 0xff}));
}

TEST(ImageQuantise, SixteenBitIsLittleEndian) {
  Image image(2, 1);
  image.pixels = {258.0f / 65535.0f, 1.0f};  // 258 = 0x0102
  const std::vector<std::uint8_t> bytes = quantise(image, 16);
  EXPECT_EQ(bytes, (std::vector<std::uint8_t>{0x02, 0x01, 0xff, 0xff}));
}

TEST(ImageQuantise, AllChannelsInterleaved) {
  Image image(2, 1, 3);
  image.pixels = {0.0f, 0.5f, 1.0f, 1.0f, 0.0f, 0.2f};
  const std::vector<std::uint8_t> bytes = quantise(image, 8);
  EXPECT_EQ(bytes, (std::vector<std::uint8_t>{0, 128, 255, 255, 0, 51}));
  const Image back = dequantise(bytes.data(), 2, 1, 8, 3);
  EXPECT_EQ(back.channels, 3);
  ASSERT_EQ(back.pixels.size(), 6u);
  EXPECT_FLOAT_EQ(back.at(1, 0, 2), 51.0f / 255.0f);
}

TEST(ImageQuantise, DequantiseExtremes) {
  const std::vector<std::uint8_t> b8 = {0, 255};
  const Image i8 = dequantise(b8.data(), 2, 1, 8);
  EXPECT_EQ(i8.pixels[0], 0.0f);
  EXPECT_EQ(i8.pixels[1], 1.0f);
  const std::vector<std::uint8_t> b16 = {0, 0, 0xff, 0xff};
  const Image i16 = dequantise(b16.data(), 2, 1, 16);
  EXPECT_EQ(i16.pixels[0], 0.0f);
  EXPECT_EQ(i16.pixels[1], 1.0f);
}

TEST(ImageQuantise, BadBitsThrow) {
  const Image image(2, 2);
  const std::vector<std::uint8_t> bytes(16, 0);
  for (int bits : {0, 1, 12, 32, -8}) {
    EXPECT_THROW(quantise(image, bits), std::invalid_argument) << bits;
    EXPECT_THROW(dequantise(bytes.data(), 2, 2, bits), std::invalid_argument) << bits;
  }
}

TEST(ImageQuantise, MismatchedBufferThrows) {
  Image image(4, 4);
  image.pixels.resize(3);
  EXPECT_THROW(quantise(image, 8), std::invalid_argument);
}

TEST(ImageToGrey, Bt601Weights) {
  Image rgb(4, 1, 3);
  rgb.pixels = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1};
  const Image grey = toGrey(rgb);
  ASSERT_EQ(grey.channels, 1);
  ASSERT_EQ(grey.width, 4);
  ASSERT_EQ(grey.height, 1);
  EXPECT_NEAR(grey.pixels[0], 0.299f, 1e-6);
  EXPECT_NEAR(grey.pixels[1], 0.587f, 1e-6);
  EXPECT_NEAR(grey.pixels[2], 0.114f, 1e-6);
  EXPECT_NEAR(grey.pixels[3], 1.0f, 1e-6);
}

TEST(ImageToGrey, MixedColour) {
  Image rgb(1, 1, 3);
  rgb.pixels = {0.2f, 0.4f, 0.8f};
  EXPECT_NEAR(toGrey(rgb).pixels[0], 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.8, 1e-6);
}

TEST(ImageToGrey, GreyIsReturnedUnchanged) {
  const Image grey = randomImage(5, 6, 1, 3);
  const Image out = toGrey(grey);
  EXPECT_EQ(out.width, 5);
  EXPECT_EQ(out.height, 6);
  EXPECT_EQ(out.pixels, grey.pixels);
}

TEST(ImageToGrey, OtherChannelCountsThrow) {
  EXPECT_THROW(toGrey(Image(2, 2, 2)), std::invalid_argument);
  EXPECT_THROW(toGrey(Image(2, 2, 4)), std::invalid_argument);
}

}  // namespace
}  // namespace comcl::imaging
