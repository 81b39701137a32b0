// Image quality metrics on the content rectangle of a normalised image.
//
// sharpness: variance of the 4-neighbour Laplacian (0 1 0 / 1 -4 1 / 0 1 0), a standard focus measure.
// noise: J. Immerkaer, "Fast Noise Variance Estimation", CVIU 64(2), 1996: the mask
//   [1 -2 1; -2 4 -2; 1 -2 1] (the difference of two Laplacians) cancels smooth structure, and for Gaussian
//   noise sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |I * N|.
// Both are computed over interior pixels on the 0..255 scale, so the numbers read like 8-bit greys.
// body*: exposure inside the central box of the content (quality.h); calibration in docs/quality.md.
#include "comcl/imaging/quality.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <stdexcept>

namespace comcl::imaging {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kHistogramBins = 4096;
// Quantised greys (k/255 stored as float) may sit a rounding error on the wrong side of the thresholds.
constexpr double kClipTolerance = 1e-6;

// Linear interpolation inside the histogram bin that holds the given fraction of the samples.
double percentile(const std::array<std::size_t, kHistogramBins>& histogram, std::size_t total,
                  double fraction) {
  const double target = fraction * static_cast<double>(total);
  double cumulative = 0;
  for (int b = 0; b < kHistogramBins; ++b) {
    const double count = static_cast<double>(histogram[static_cast<std::size_t>(b)]);
    if (count > 0 && cumulative + count >= target) {
      const double within = std::clamp((target - cumulative) / count, 0.0, 1.0);
      return (b + within) / kHistogramBins;
    }
    cumulative += count;
  }
  return 1.0;
}

}  // namespace

QualityMetrics measureQuality(const Image& image, Rect content) {
  QualityMetrics metrics;
  if (image.width <= 0 || image.height <= 0 || image.pixels.empty()) {
    return metrics;
  }
  if (image.pixels.size() != static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) *
                                 static_cast<std::size_t>(std::max(image.channels, 0))) {
    throw std::invalid_argument("measureQuality: pixel buffer does not match the image size");
  }
  // RGB is converted to luminance; a grey image is used in place without a copy.
  Image greyCopy;
  const Image* grey = &image;
  if (image.channels != 1) {
    greyCopy = toGrey(image);
    grey = &greyCopy;
  }

  if (content.width <= 0 || content.height <= 0) {
    content = Rect{0, 0, image.width, image.height};
  }
  // Clamp the rectangle to the image (computed in long long so that huge rectangles cannot overflow).
  const long long x0 = std::clamp<long long>(content.x, 0, image.width);
  const long long y0 = std::clamp<long long>(content.y, 0, image.height);
  const long long x1 =
      std::clamp<long long>(static_cast<long long>(content.x) + content.width, 0, image.width);
  const long long y1 =
      std::clamp<long long>(static_cast<long long>(content.y) + content.height, 0, image.height);
  const int w = static_cast<int>(x1 - x0);
  const int h = static_cast<int>(y1 - y0);
  if (w < 3 || h < 3) {
    return metrics;
  }

  const std::size_t stride = static_cast<std::size_t>(image.width);
  auto row = [&](int y) {
    return grey->pixels.data() + (static_cast<std::size_t>(y0) + static_cast<std::size_t>(y)) * stride +
           static_cast<std::size_t>(x0);
  };

  // First-order statistics, clipping and the histogram in one sweep.
  std::array<std::size_t, kHistogramBins> histogram{};
  double sum = 0;
  double sumSq = 0;
  std::size_t low = 0;
  std::size_t high = 0;
  double lowest = 1.0;
  double highest = 0.0;
  const double lowLimit = 1.0 / 255.0 + kClipTolerance;
  const double highLimit = 254.0 / 255.0 - kClipTolerance;
  for (int y = 0; y < h; ++y) {
    const float* r = row(y);
    for (int x = 0; x < w; ++x) {
      const double v = std::clamp(static_cast<double>(r[x]), 0.0, 1.0);
      sum += v;
      sumSq += v * v;
      lowest = std::min(lowest, v);
      highest = std::max(highest, v);
      low += v <= lowLimit ? 1 : 0;
      high += v >= highLimit ? 1 : 0;
      const int bin = std::min(kHistogramBins - 1, static_cast<int>(v * kHistogramBins));
      ++histogram[static_cast<std::size_t>(bin)];
    }
  }
  const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h);
  const double count = static_cast<double>(n);
  const double mean = sum / count;
  metrics.meanIntensity = mean;
  metrics.contrast = std::sqrt(std::max(0.0, sumSq / count - mean * mean));
  metrics.clipLow = static_cast<double>(low) / count;
  metrics.clipHigh = static_cast<double>(high) / count;
  // Interpolated bin positions, kept within the observed range so that a flat image gives exactly 0.
  const double p1 = std::clamp(percentile(histogram, n, 0.01), lowest, highest);
  const double p99 = std::clamp(percentile(histogram, n, 0.99), lowest, highest);
  metrics.dynamicRange = std::max(0.0, p99 - p1);

  // Body region: the central box of the content rectangle (at least one pixel), in the same units.
  const int bx0 = std::min(w - 1, static_cast<int>(kBodyBoxMargin * w));
  const int by0 = std::min(h - 1, static_cast<int>(kBodyBoxMargin * h));
  const int bx1 = std::max(bx0 + 1, w - bx0);
  const int by1 = std::max(by0 + 1, h - by0);
  double bodySum = 0;
  std::size_t bodyLow = 0;
  std::size_t bodyHigh = 0;
  for (int y = by0; y < by1; ++y) {
    const float* r = row(y);
    for (int x = bx0; x < bx1; ++x) {
      const double v = std::clamp(static_cast<double>(r[x]), 0.0, 1.0);
      bodySum += v;
      bodyLow += v <= lowLimit ? 1 : 0;
      bodyHigh += v >= highLimit ? 1 : 0;
    }
  }
  const double bodyCount = static_cast<double>(bx1 - bx0) * static_cast<double>(by1 - by0);
  metrics.bodyClipLow = static_cast<double>(bodyLow) / bodyCount;
  metrics.bodyClipHigh = static_cast<double>(bodyHigh) / bodyCount;
  metrics.bodyMean = bodySum / bodyCount;

  // Laplacian and Immerkaer's mask over interior pixels, on the 0..255 scale.
  double lapSum = 0;
  double lapSumSq = 0;
  double noiseSum = 0;
  for (int y = 1; y < h - 1; ++y) {
    const float* up = row(y - 1);
    const float* mid = row(y);
    const float* down = row(y + 1);
    for (int x = 1; x < w - 1; ++x) {
      const double lap =
          255.0 * (static_cast<double>(up[x]) + down[x] + mid[x - 1] + mid[x + 1] - 4.0 * mid[x]);
      lapSum += lap;
      lapSumSq += lap * lap;
      const double corners = static_cast<double>(up[x - 1]) + up[x + 1] + down[x - 1] + down[x + 1];
      const double edges = static_cast<double>(up[x]) + down[x] + mid[x - 1] + mid[x + 1];
      noiseSum += std::abs(255.0 * (corners - 2.0 * edges + 4.0 * mid[x]));
    }
  }
  const double interior = static_cast<double>(w - 2) * static_cast<double>(h - 2);
  const double lapMean = lapSum / interior;
  metrics.sharpness = std::max(0.0, lapSumSq / interior - lapMean * lapMean);
  metrics.noise = std::sqrt(kPi / 2.0) / (6.0 * interior) * noiseSum;
  return metrics;
}

}  // namespace comcl::imaging
