#include "comcl/imaging/quality.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <vector>

#include "comcl/imaging/decode.h"
#include "comcl/imaging/resize.h"
#include "comcl/imaging/synth.h"
#include "temp_dir.h"

namespace comcl::imaging {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Structured test image: a mid-grey background with Gaussian blobs and hard-edged rectangles at random
// places (fixed seed), so that it has both smooth regions and edges.
Image texturedImage(int width, int height, unsigned seed) {
  Image image(width, height);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<double> acc(static_cast<std::size_t>(width) * height, 0.5);
  for (int b = 0; b < 40; ++b) {
    const double cx = unit(rng) * width;
    const double cy = unit(rng) * height;
    const double radius = 2.0 + unit(rng) * 10.0;
    const double amplitude = (unit(rng) - 0.5) * 0.6;
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        const double d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
        acc[static_cast<std::size_t>(y) * width + x] += amplitude * std::exp(-d2 / (2 * radius * radius));
      }
    }
  }
  for (int r = 0; r < 15; ++r) {
    const int x0 = static_cast<int>(unit(rng) * width);
    const int y0 = static_cast<int>(unit(rng) * height);
    const int x1 = std::min(width, x0 + 3 + static_cast<int>(unit(rng) * width / 3));
    const int y1 = std::min(height, y0 + 3 + static_cast<int>(unit(rng) * height / 3));
    const double step = (unit(rng) - 0.5) * 0.4;
    for (int y = y0; y < y1; ++y) {
      for (int x = x0; x < x1; ++x) {
        acc[static_cast<std::size_t>(y) * width + x] += step;
      }
    }
  }
  for (std::size_t i = 0; i < acc.size(); ++i) {
    image.pixels[i] = static_cast<float>(std::clamp(acc[i], 0.05, 0.95));
  }
  return image;
}

// Separable Gaussian blur with edge replication.
Image gaussianBlur(const Image& image, double sigma) {
  const int radius = static_cast<int>(std::ceil(3 * sigma));
  std::vector<double> kernel(static_cast<std::size_t>(2 * radius + 1));
  double total = 0;
  for (int k = -radius; k <= radius; ++k) {
    kernel[static_cast<std::size_t>(k + radius)] = std::exp(-k * k / (2 * sigma * sigma));
    total += kernel[static_cast<std::size_t>(k + radius)];
  }
  for (double& k : kernel) {
    k /= total;
  }
  auto pass = [&](const Image& in, int dx, int dy) {
    Image out(in.width, in.height);
    for (int y = 0; y < in.height; ++y) {
      for (int x = 0; x < in.width; ++x) {
        double sum = 0;
        for (int k = -radius; k <= radius; ++k) {
          const int sx = std::clamp(x + k * dx, 0, in.width - 1);
          const int sy = std::clamp(y + k * dy, 0, in.height - 1);
          sum += kernel[static_cast<std::size_t>(k + radius)] * in.at(sx, sy);
        }
        out.at(x, y) = static_cast<float>(sum);
      }
    }
    return out;
  };
  return pass(pass(image, 1, 0), 0, 1);
}

// A slowly varying image: the Immerkaer mask sees (almost) nothing of it.
Image smoothImage(int width, int height) {
  Image image(width, height);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.at(x, y) =
          static_cast<float>(0.5 + 0.15 * std::sin(2 * kPi * x / width) * std::cos(2 * kPi * y / height));
    }
  }
  return image;
}

Image withNoise(const Image& image, double sigma255, unsigned seed) {
  Image out = image;
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, sigma255 / 255.0);
  for (float& v : out.pixels) {
    v = static_cast<float>(v + noise(rng));
  }
  return out;
}

void expectSameMetrics(const QualityMetrics& a, const QualityMetrics& b, double tolerance) {
  EXPECT_NEAR(a.sharpness, b.sharpness, tolerance * std::max(1.0, b.sharpness));
  EXPECT_NEAR(a.noise, b.noise, tolerance * std::max(1.0, b.noise));
  EXPECT_NEAR(a.contrast, b.contrast, tolerance);
  EXPECT_NEAR(a.clipLow, b.clipLow, tolerance);
  EXPECT_NEAR(a.clipHigh, b.clipHigh, tolerance);
  EXPECT_NEAR(a.dynamicRange, b.dynamicRange, tolerance);
  EXPECT_NEAR(a.meanIntensity, b.meanIntensity, tolerance);
  EXPECT_NEAR(a.bodyClipLow, b.bodyClipLow, tolerance);
  EXPECT_NEAR(a.bodyClipHigh, b.bodyClipHigh, tolerance);
  EXPECT_NEAR(a.bodyMean, b.bodyMean, tolerance);
}

TEST(Quality, BlurLowersSharpnessMonotonically) {
  const Image image = texturedImage(128, 128, 42);
  double previous = measureQuality(image).sharpness;
  EXPECT_GT(previous, 10.0);
  for (double sigma : {0.5, 1.0, 2.0, 4.0}) {
    const double sharpness = measureQuality(gaussianBlur(image, sigma)).sharpness;
    EXPECT_LT(sharpness, previous) << "sigma " << sigma;
    previous = sharpness;
  }
}

TEST(Quality, NoiseOfKnownSigmaIsEstimated) {
  const Image smooth = smoothImage(256, 256);
  EXPECT_LT(measureQuality(smooth).noise, 0.5);
  for (double sigma : {5.0, 10.0}) {
    const double estimate = measureQuality(withNoise(smooth, sigma, 7)).noise;
    EXPECT_NEAR(estimate, sigma, 0.15 * sigma) << "sigma " << sigma;
  }
}

TEST(Quality, NoiseRaisesSharpness) {
  const Image smooth = smoothImage(128, 128);
  EXPECT_GT(measureQuality(withNoise(smooth, 5.0, 3)).sharpness, 10 * measureQuality(smooth).sharpness + 1.0);
}

TEST(Quality, FlatImageHasNoStructure) {
  Image flat(64, 48);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 0.4f);
  const QualityMetrics m = measureQuality(flat);
  EXPECT_NEAR(m.noise, 0.0, 1e-6);
  EXPECT_NEAR(m.sharpness, 0.0, 1e-6);
  EXPECT_NEAR(m.contrast, 0.0, 1e-6);
  EXPECT_NEAR(m.dynamicRange, 0.0, 1e-9);
  EXPECT_NEAR(m.meanIntensity, 0.4, 1e-6);
  EXPECT_EQ(m.clipLow, 0.0);
  EXPECT_EQ(m.clipHigh, 0.0);
}

TEST(Quality, ClippingFractionsAreExact) {
  // 100 x 100: 10 % at or below 1/255, 5 % at or above 254/255, the rest just inside the limits.
  Image image(100, 100);
  for (std::size_t i = 0; i < image.pixels.size(); ++i) {
    float v;
    if (i < 600) {
      v = 0.0f;
    } else if (i < 1000) {
      v = 1.0f / 255.0f;
    } else if (i < 1300) {
      v = 1.0f;
    } else if (i < 1500) {
      v = 254.0f / 255.0f;
    } else {
      v = (i % 2 == 0) ? 2.0f / 255.0f : 253.0f / 255.0f;
    }
    image.pixels[i] = v;
  }
  std::shuffle(image.pixels.begin(), image.pixels.end(), std::mt19937(5));
  const QualityMetrics m = measureQuality(image);
  EXPECT_DOUBLE_EQ(m.clipLow, 0.10);
  EXPECT_DOUBLE_EQ(m.clipHigh, 0.05);
}

TEST(Quality, LinearRampDynamicRangeAndContrast) {
  constexpr int kLevels = 1024;
  Image ramp(kLevels, 16);
  for (int y = 0; y < ramp.height; ++y) {
    for (int x = 0; x < ramp.width; ++x) {
      ramp.at(x, y) = static_cast<float>(x) / (kLevels - 1);
    }
  }
  const QualityMetrics m = measureQuality(ramp);
  EXPECT_NEAR(m.dynamicRange, 0.98, 0.003);
  EXPECT_NEAR(m.meanIntensity, 0.5, 1e-6);
  // Uniform on n equally spaced levels in [0, 1]: std = sqrt((n^2 - 1) / 12) / (n - 1).
  EXPECT_NEAR(m.contrast, std::sqrt((1.0 * kLevels * kLevels - 1.0) / 12.0) / (kLevels - 1), 1e-6);
  EXPECT_NEAR(m.noise, 0.0, 1e-3);  // a linear ramp is cancelled by both masks
  EXPECT_NEAR(m.sharpness, 0.0, 1e-3);
  EXPECT_DOUBLE_EQ(m.clipLow, 5.0 / kLevels);  // levels 0..4 of 1023 are at or below 1/255
  EXPECT_DOUBLE_EQ(m.clipHigh, 5.0 / kLevels);
}

TEST(Quality, HalfBlackHalfWhite) {
  Image image(10, 10);
  for (int y = 0; y < 10; ++y) {
    for (int x = 5; x < 10; ++x) {
      image.at(x, y) = 1.0f;
    }
  }
  const QualityMetrics m = measureQuality(image);
  EXPECT_NEAR(m.contrast, 0.5, 1e-9);
  EXPECT_NEAR(m.meanIntensity, 0.5, 1e-9);
  EXPECT_DOUBLE_EQ(m.clipLow, 0.5);
  EXPECT_DOUBLE_EQ(m.clipHigh, 0.5);
  EXPECT_NEAR(m.dynamicRange, 1.0, 1e-3);
}

TEST(Quality, RectExcludesLetterboxPadding) {
  // 64 x 40 into 64: the content is the image itself, unresampled.
  const Image image = texturedImage(64, 40, 9);
  const Letterboxed boxed = letterbox(image, 64);
  ASSERT_EQ(boxed.content.width, 64);
  ASSERT_EQ(boxed.content.height, 40);
  expectSameMetrics(measureQuality(boxed.image, boxed.content), measureQuality(image), 1e-9);
  // Without the rectangle the black padding shows up as clipping.
  EXPECT_GT(measureQuality(boxed.image).clipLow, 0.3);

  // With resampling: the content metrics are those of the resized image.
  const Image big = texturedImage(200, 120, 10);
  const Letterboxed small = letterbox(big, 100);
  const Image resized = resize(big, small.content.width, small.content.height);
  expectSameMetrics(measureQuality(small.image, small.content), measureQuality(resized), 1e-9);
}

TEST(Quality, RectIsClampedToTheImage) {
  const Image image = texturedImage(50, 40, 11);
  expectSameMetrics(measureQuality(image, Rect{-10, -20, 1000, 1000}), measureQuality(image), 1e-12);
  // A rectangle hanging over the right edge equals its clipped part.
  Image part(20, 40);
  for (int y = 0; y < 40; ++y) {
    for (int x = 0; x < 20; ++x) {
      part.at(x, y) = image.at(30 + x, y);
    }
  }
  expectSameMetrics(measureQuality(image, Rect{30, 0, 100, 40}), measureQuality(part), 1e-12);
}

TEST(Quality, TinyImagesGiveZeros) {
  Image tiny(2, 2);
  tiny.pixels = {0.1f, 0.9f, 0.5f, 0.3f};
  const QualityMetrics zero;
  expectSameMetrics(measureQuality(tiny), zero, 0.0);
  const Image image = texturedImage(50, 40, 12);
  expectSameMetrics(measureQuality(image, Rect{10, 10, 2, 30}), zero, 0.0);
  expectSameMetrics(measureQuality(image, Rect{48, 0, 10, 40}), zero, 0.0);   // 2 wide once clamped
  expectSameMetrics(measureQuality(image, Rect{60, 60, 10, 10}), zero, 0.0);  // outside
  expectSameMetrics(measureQuality(Image()), zero, 0.0);
}

TEST(Quality, RgbIsMeasuredAsLuminance) {
  const Image r = texturedImage(40, 30, 13);
  const Image g = texturedImage(40, 30, 14);
  const Image b = texturedImage(40, 30, 15);
  Image rgb(40, 30, 3);
  for (int y = 0; y < 30; ++y) {
    for (int x = 0; x < 40; ++x) {
      rgb.at(x, y, 0) = r.at(x, y);
      rgb.at(x, y, 1) = g.at(x, y);
      rgb.at(x, y, 2) = b.at(x, y);
    }
  }
  expectSameMetrics(measureQuality(rgb), measureQuality(toGrey(rgb)), 1e-12);
  EXPECT_THROW(measureQuality(Image(8, 8, 2)), std::invalid_argument);
}

// The body box of a w x h content rectangle, as quality.h defines it.
Rect bodyBox(int w, int h) {
  const int x0 = static_cast<int>(kBodyBoxMargin * w);
  const int y0 = static_cast<int>(kBodyBoxMargin * h);
  return Rect{x0, y0, w - 2 * x0, h - 2 * y0};
}

TEST(Quality, BodyMetricsIgnoreTheAirAroundTheBody) {
  // A "patient" filling exactly the body box, in black air: the frame is mostly black, the body is not.
  Image image(120, 80);
  const Rect body = bodyBox(120, 80);
  for (int y = body.y; y < body.y + body.height; ++y) {
    for (int x = body.x; x < body.x + body.width; ++x) {
      image.at(x, y) = (x + y) % 2 == 0 ? 0.4f : 0.6f;
    }
  }
  const QualityMetrics m = measureQuality(image);
  EXPECT_GT(m.clipLow, 0.7);
  EXPECT_DOUBLE_EQ(m.bodyClipLow, 0.0);
  EXPECT_DOUBLE_EQ(m.bodyClipHigh, 0.0);
  EXPECT_NEAR(m.bodyMean, 0.5, 1e-6);
  // Burning out part of the body shows up in the body fraction.
  for (int y = body.y; y < body.y + body.height / 2; ++y) {
    for (int x = body.x; x < body.x + body.width; ++x) {
      image.at(x, y) = 0.0f;
    }
  }
  const QualityMetrics burnt = measureQuality(image);
  EXPECT_NEAR(burnt.bodyClipLow, 0.5, 1.0 / body.height);
  EXPECT_LT(burnt.bodyMean, m.bodyMean);
}

TEST(Quality, BodyMetricsAreExactInsideTheBox) {
  // Random greys with exact extremes; the body metrics equal the frame metrics of the box cut out.
  Image image = texturedImage(90, 70, 21);
  std::mt19937 rng(3);
  for (float& v : image.pixels) {
    const unsigned r = rng() % 10;
    v = r == 0 ? 0.0f : r == 1 ? 1.0f : v;
  }
  const Rect body = bodyBox(90, 70);
  Image part(body.width, body.height);
  for (int y = 0; y < body.height; ++y) {
    for (int x = 0; x < body.width; ++x) {
      part.at(x, y) = image.at(body.x + x, body.y + y);
    }
  }
  const QualityMetrics whole = measureQuality(image);
  const QualityMetrics box = measureQuality(part);
  EXPECT_DOUBLE_EQ(whole.bodyClipLow, box.clipLow);
  EXPECT_DOUBLE_EQ(whole.bodyClipHigh, box.clipHigh);
  EXPECT_NEAR(whole.bodyMean, box.meanIntensity, 1e-9);
  EXPECT_GT(whole.bodyClipHigh, 0.05);
  // The box follows the content rectangle of a letterboxed image.
  const Letterboxed boxed = letterbox(image, 128);
  const QualityMetrics inContent = measureQuality(boxed.image, boxed.content);
  const QualityMetrics resized = measureQuality(resize(image, boxed.content.width, boxed.content.height));
  EXPECT_NEAR(inContent.bodyClipLow, resized.bodyClipLow, 1e-12);
  EXPECT_NEAR(inContent.bodyMean, resized.bodyMean, 1e-12);
}

TEST(Quality, FlatImageBodyMetrics) {
  Image flat(64, 48);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 1.0f);
  const QualityMetrics m = measureQuality(flat);
  EXPECT_DOUBLE_EQ(m.bodyClipHigh, 1.0);
  EXPECT_DOUBLE_EQ(m.bodyClipLow, 0.0);
  EXPECT_NEAR(m.bodyMean, 1.0, 1e-9);
}

// Synthetic twins (same seed, same anatomy): an overexposed archive and its clean twin, frontal and lateral.
TEST(Quality, BodyMetricsSeparateOverexposedFilmsFromTheirTwinsWhereFrameClippingDoesNot) {
  testing::TempDir dir;
  SynthOptions options;
  options.patients = 6;
  options.studiesPerPatient = 1;
  options.size = 256;
  options.lesionFraction = 0.0;
  options.degradations = {Degradation::Overexposed};
  options.encodings = {Encoding::Mono2Uint16};
  options.seed = 5;
  options.degradedFraction = 1.0;
  options.outputDir = dir.file("over");
  const std::vector<SynthImage> over = writeSyntheticArchive(options);
  options.degradedFraction = 0.0;
  options.outputDir = dir.file("clean");
  const std::vector<SynthImage> clean = writeSyntheticArchive(options);
  ASSERT_EQ(over.size(), clean.size());

  DecodeOptions decode;
  decode.size = 256;
  auto measure = [&](const std::string& root, const SynthImage& image) {
    const DecodeResult r = decodeFile(root + "/" + image.file, decode);
    EXPECT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
    return measureQuality(r.image, r.report.content);
  };
  double cleanLateralClipLow = 0;  // the most black any clean lateral film has, frame-wide
  double overFrontalClipLow = 1;   // the least black any overexposed frontal film has, frame-wide
  int frontal = 0;
  for (std::size_t i = 0; i < over.size(); ++i) {
    SCOPED_TRACE(over[i].file);
    ASSERT_EQ(over[i].degradation, Degradation::Overexposed);
    ASSERT_EQ(clean[i].degradation, Degradation::None);
    const QualityMetrics o = measure(dir.file("over"), over[i]);
    const QualityMetrics c = measure(dir.file("clean"), clean[i]);
    if (over[i].view == "LL") {
      cleanLateralClipLow = std::max(cleanLateralClipLow, c.clipLow);
      // The air in front of and behind the patient is outside the body box.
      EXPECT_LT(c.bodyClipLow, c.clipLow - 0.1);
      continue;
    }
    ++frontal;
    overFrontalClipLow = std::min(overFrontalClipLow, o.clipLow);
    // Twin against twin: the lungs burn out inside the body and the body darkens.
    EXPECT_GT(o.bodyClipLow, c.bodyClipLow + 0.1);
    EXPECT_LT(o.bodyMean, c.bodyMean);
  }
  ASSERT_GT(frontal, 0);
  // Frame-wide, a clean lateral film is blacker than some overexposed frontal films, so no frame-level
  // threshold can tell them apart.
  EXPECT_GT(cleanLateralClipLow, overFrontalClipLow);
}

}  // namespace
}  // namespace comcl::imaging
