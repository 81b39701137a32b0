// Image quality metrics, computed on the normalised image ([0, 1] greys), restricted to its content
// rectangle so that letterbox padding does not count. No thresholds here: flags (good / usable / reject) are
// in quality_flags.h, with defaults calibrated on the 256 x 256 cache image (docs/quality.md).
#pragma once

#include "comcl/imaging/image.h"

namespace comcl::imaging {

struct QualityMetrics {
  double sharpness = 0;      // variance of the 4-neighbour Laplacian, intensities scaled to 0..255
  double noise = 0;          // noise standard deviation (Immerkaer's estimator), 0..255 scale
  double contrast = 0;       // RMS contrast: standard deviation of the intensities, 0..1
  double clipLow = 0;        // fraction of pixels at or below 1/255 (black extreme)
  double clipHigh = 0;       // fraction of pixels at or above 254/255 (white extreme)
  double dynamicRange = 0;   // 99th minus 1st percentile of the intensities, 0..1
  double meanIntensity = 0;  // 0..1
  // Exposure inside the body region: the central box of the content rectangle, kBodyBoxMargin of its width
  // and height cut off on every side (the central half of each side, a quarter of the area). On chest films,
  // frontal and lateral, that box lies inside the thorax (lungs, mediastinum, heart, spine), not in the air
  // around the patient nor on the labels in the corners, so black there is burnt-out lung, not air.
  double bodyClipLow = 0;   // fraction of body pixels at or below 1/255 (overexposed: lungs burnt to black)
  double bodyClipHigh = 0;  // fraction of body pixels at or above 254/255 (underexposed: dense parts white)
  double bodyMean = 0;      // mean intensity of the body pixels, 0..1
};

// Fraction of the content width (and height) cut off on each side to get the body region.
constexpr double kBodyBoxMargin = 0.25;

// Metrics of a single-channel image (an RGB image is converted to luminance first) inside `content`;
// an empty rectangle means the whole image and a rectangle reaching outside the image is clipped to it.
// Images (or clipped rectangles) smaller than 3x3 give all-zero metrics. Throws std::invalid_argument for
// a pixel buffer that does not match the size or a channel count other than 1 or 3.
QualityMetrics measureQuality(const Image& image, Rect content = {});

}  // namespace comcl::imaging
