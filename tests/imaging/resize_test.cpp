#include "comcl/imaging/resize.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include "random_image.h"

namespace comcl::imaging {
namespace {

using testing::randomImage;

Image constantImage(int width, int height, int channels, float value) {
  Image image(width, height, channels);
  std::fill(image.pixels.begin(), image.pixels.end(), value);
  return image;
}

double mean(const Image& image) {
  return std::accumulate(image.pixels.begin(), image.pixels.end(), 0.0) /
         static_cast<double>(image.pixels.size());
}

Image checkerboard(int width, int height) {
  Image image(width, height);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.at(x, y) = static_cast<float>((x + y) % 2);
    }
  }
  return image;
}

// One channel of a multi-channel image.
Image channel(const Image& image, int c) {
  Image out(image.width, image.height);
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      out.at(x, y) = image.at(x, y, c);
    }
  }
  return out;
}

TEST(Resize, ExactOutputSizes) {
  const std::vector<std::pair<std::pair<int, int>, std::pair<int, int>>> cases = {
      {{1955, 1841}, {256, 241}}, {{3, 5}, {17, 9}},   {{1, 1}, {4, 4}},    {{100, 1}, {7, 1}},
      {{64, 64}, {64, 64}},       {{10, 20}, {10, 3}}, {{10, 20}, {3, 20}}, {{7, 7}, {1, 1}}};
  for (const auto& [in, out] : cases) {
    for (int channels : {1, 3}) {
      const Image image(in.first, in.second, channels);
      const Image result = resize(image, out.first, out.second);
      EXPECT_EQ(result.width, out.first);
      EXPECT_EQ(result.height, out.second);
      EXPECT_EQ(result.channels, channels);
      EXPECT_EQ(result.pixels.size(), static_cast<std::size_t>(out.first) * out.second * channels);
    }
  }
}

TEST(Resize, ConstantStaysConstant) {
  const std::vector<std::pair<int, int>> targets = {{256, 241}, {13, 7}, {500, 450}, {1, 1}, {300, 17}};
  for (int channels : {1, 3}) {
    const Image image = constantImage(300, 283, channels, 0.37f);
    for (const auto& [w, h] : targets) {
      const Image result = resize(image, w, h);
      for (float v : result.pixels) {
        ASSERT_NEAR(v, 0.37f, 1e-5) << w << "x" << h << " channels " << channels;
      }
    }
  }
}

TEST(Resize, PreservesMean) {
  const Image image = randomImage(300, 200, 1, 7);
  const double before = mean(image);
  for (const auto& [w, h] : std::vector<std::pair<int, int>>{{75, 50}, {113, 71}, {256, 170}, {31, 29}}) {
    EXPECT_NEAR(mean(resize(image, w, h)), before, 0.005) << w << "x" << h;
  }
}

TEST(Resize, DownscaledCheckerboardIsGreyEverywhere) {
  // A point sampler would return only 0s or 1s here; the widened filter averages the pattern away.
  const Image result = resize(checkerboard(256, 256), 64, 64);
  for (float v : result.pixels) {
    ASSERT_NEAR(v, 0.5f, 0.01f);
  }
}

TEST(Resize, DownscaledCheckerboardByNonIntegerFactorsIsGrey) {
  // Plain (unwidened) bilinear happens to give 0.5 at factor 4, but not here: it samples two pixels only
  // and returns values from near 0 to near 1.
  for (int size : {37, 48, 85, 100}) {
    const Image result = resize(checkerboard(256, 256), size, size);
    for (float v : result.pixels) {
      ASSERT_NEAR(v, 0.5f, 0.01f) << "256 -> " << size;
    }
  }
}

TEST(Resize, DownscaledCheckerboardByThreeIsGrey) {
  const Image result = resize(checkerboard(192, 150), 64, 50);
  for (float v : result.pixels) {
    ASSERT_NEAR(v, 0.5f, 0.02f);
  }
}

TEST(Resize, UpscaledRampStaysMonotonic) {
  Image ramp(16, 3);
  for (int y = 0; y < ramp.height; ++y) {
    for (int x = 0; x < ramp.width; ++x) {
      ramp.at(x, y) = static_cast<float>(x) / 15.0f;
    }
  }
  const Image result = resize(ramp, 101, 7);
  for (int y = 0; y < result.height; ++y) {
    for (int x = 1; x < result.width; ++x) {
      ASSERT_GE(result.at(x, y), result.at(x - 1, y)) << "x " << x;
    }
    EXPECT_NEAR(result.at(0, y), 0.0f, 1e-6);
    EXPECT_NEAR(result.at(result.width - 1, y), 1.0f, 1e-6);
    EXPECT_GT(result.at(50, y), 0.4f);
    EXPECT_LT(result.at(50, y), 0.6f);
  }
}

TEST(Resize, UpscaleIsBilinearWithCentreAlignment) {
  Image image(2, 1);
  image.pixels = {0.0f, 1.0f};
  // Output centres map to source -0.25, 0.25, 0.75, 1.25 (edges clamp to the border pixel).
  const Image result = resize(image, 4, 1);
  ASSERT_EQ(result.pixels.size(), 4u);
  EXPECT_NEAR(result.pixels[0], 0.0f, 1e-6);
  EXPECT_NEAR(result.pixels[1], 0.25f, 1e-6);
  EXPECT_NEAR(result.pixels[2], 0.75f, 1e-6);
  EXPECT_NEAR(result.pixels[3], 1.0f, 1e-6);
}

TEST(Resize, HalvingAveragesPairs) {
  // Scale 2: taps at distances 0.5 and 1.5 with weights 3/4 and 1/4 (normalised), symmetric.
  Image image(8, 1);
  image.pixels = {0, 0, 1, 1, 0, 0, 1, 1};
  const Image result = resize(image, 4, 1);
  // Output 1 sits between pixels 2 and 3: (0.25*0 + 0.75*1 + 0.75*1 + 0.25*0) / 2 = 0.75.
  EXPECT_NEAR(result.pixels[1], 0.75f, 1e-6);
  EXPECT_NEAR(result.pixels[2], 0.25f, 1e-6);
}

TEST(Resize, SameSizeIsIdentity) {
  const Image image = randomImage(33, 21, 3, 5);
  EXPECT_EQ(resize(image, 33, 21).pixels, image.pixels);
}

TEST(Resize, SeparableAndOrderIndependent) {
  const Image image = randomImage(120, 90, 1, 11);
  // Both a shrink-width-first and a shrink-height-first case, against one axis at a time.
  for (const auto& [w, h] : std::vector<std::pair<int, int>>{{20, 80}, {110, 15}, {37, 200}}) {
    const Image direct = resize(image, w, h);
    const Image widthThenHeight = resize(resize(image, w, image.height), w, h);
    const Image heightThenWidth = resize(resize(image, image.width, h), w, h);
    for (std::size_t i = 0; i < direct.pixels.size(); ++i) {
      ASSERT_NEAR(direct.pixels[i], widthThenHeight.pixels[i], 1e-5);
      ASSERT_NEAR(direct.pixels[i], heightThenWidth.pixels[i], 1e-5);
    }
  }
}

TEST(Resize, ChannelsAreIndependentForAnyCount) {
  for (int channels : {2, 3, 4, 5}) {
    const Image image = randomImage(50, 40, channels, 100 + static_cast<unsigned>(channels));
    const Image result = resize(image, 17, 61);
    for (int c = 0; c < channels; ++c) {
      const Image expected = resize(channel(image, c), 17, 61);
      const Image got = channel(result, c);
      for (std::size_t i = 0; i < got.pixels.size(); ++i) {
        ASSERT_NEAR(got.pixels[i], expected.pixels[i], 1e-6) << "channels " << channels << " c " << c;
      }
    }
  }
}

TEST(Resize, OutputStaysInInputRange) {
  const Image image = randomImage(97, 89, 1, 13);
  for (float v : resize(image, 250, 30).pixels) {
    ASSERT_GE(v, 0.0f);
    ASSERT_LE(v, 1.0f + 1e-6f);
  }
}

TEST(Resize, InvalidArgumentsThrow) {
  EXPECT_THROW(resize(Image(), 4, 4), std::invalid_argument);
  EXPECT_THROW(resize(Image(4, 4), 0, 4), std::invalid_argument);
  EXPECT_THROW(resize(Image(4, 4), 4, -1), std::invalid_argument);
  Image broken(4, 4);
  broken.pixels.resize(5);
  EXPECT_THROW(resize(broken, 2, 2), std::invalid_argument);
}

TEST(Letterbox, WideImageIsCentredWithBlackPadding) {
  const Image image = constantImage(200, 100, 1, 0.8f);
  const Letterboxed result = letterbox(image, 64);
  EXPECT_EQ(result.image.width, 64);
  EXPECT_EQ(result.image.height, 64);
  EXPECT_EQ(result.content.x, 0);
  EXPECT_EQ(result.content.y, 16);
  EXPECT_EQ(result.content.width, 64);
  EXPECT_EQ(result.content.height, 32);
  for (int y = 0; y < 64; ++y) {
    for (int x = 0; x < 64; ++x) {
      if (y < 16 || y >= 48) {
        ASSERT_EQ(result.image.at(x, y), 0.0f) << x << "," << y;
      } else {
        ASSERT_NEAR(result.image.at(x, y), 0.8f, 1e-5) << x << "," << y;
      }
    }
  }
}

TEST(Letterbox, TallImageIsCentredHorizontally) {
  const Letterboxed result = letterbox(constantImage(100, 200, 3, 1.0f), 64);
  EXPECT_EQ(result.image.channels, 3);
  EXPECT_EQ(result.content.x, 16);
  EXPECT_EQ(result.content.y, 0);
  EXPECT_EQ(result.content.width, 32);
  EXPECT_EQ(result.content.height, 64);
  EXPECT_EQ(result.image.at(15, 10, 2), 0.0f);
  EXPECT_NEAR(result.image.at(16, 10, 2), 1.0f, 1e-5);
  EXPECT_NEAR(result.image.at(47, 10, 0), 1.0f, 1e-5);
  EXPECT_EQ(result.image.at(48, 10, 0), 0.0f);
}

TEST(Letterbox, RoundsTheShorterSide) {
  const Letterboxed chest = letterbox(Image(1955, 1841), 256);
  EXPECT_EQ(chest.content.width, 256);
  EXPECT_EQ(chest.content.height, 241);  // round(1841 * 256 / 1955) = round(241.07)
  EXPECT_EQ(chest.content.x, 0);
  EXPECT_EQ(chest.content.y, 7);

  const Letterboxed thin = letterbox(Image(1000, 1), 64);
  EXPECT_EQ(thin.content.width, 64);
  EXPECT_EQ(thin.content.height, 1);  // never 0
  EXPECT_EQ(thin.content.y, 31);

  const Letterboxed square = letterbox(Image(10, 10), 64);
  EXPECT_EQ(square.content.x, 0);
  EXPECT_EQ(square.content.y, 0);
  EXPECT_EQ(square.content.width, 64);
  EXPECT_EQ(square.content.height, 64);
}

TEST(Letterbox, ContentEqualsResizedImage) {
  const Image image = randomImage(150, 90, 1, 17);
  const Letterboxed result = letterbox(image, 50);
  const Image expected = resize(image, result.content.width, result.content.height);
  for (int y = 0; y < expected.height; ++y) {
    for (int x = 0; x < expected.width; ++x) {
      ASSERT_EQ(result.image.at(result.content.x + x, result.content.y + y), expected.at(x, y));
    }
  }
}

TEST(Letterbox, InvalidArgumentsThrow) {
  EXPECT_THROW(letterbox(Image(), 64), std::invalid_argument);
  EXPECT_THROW(letterbox(Image(4, 4), 0), std::invalid_argument);
}

}  // namespace
}  // namespace comcl::imaging
