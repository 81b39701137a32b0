// Image quality metrics, computed on the normalised image ([0, 1] greys), restricted to its content
// rectangle so that letterbox padding does not count. No thresholds here: flags come from the plugin config.
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
};

// Metrics of a single-channel image (an RGB image is converted to luminance first) inside `content`;
// an empty rectangle means the whole image and a rectangle reaching outside the image is clipped to it.
// Images (or clipped rectangles) smaller than 3x3 give all-zero metrics. Throws std::invalid_argument for
// a pixel buffer that does not match the size or a channel count other than 1 or 3.
QualityMetrics measureQuality(const Image& image, Rect content = {});

}  // namespace comcl::imaging
