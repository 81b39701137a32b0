// Anti-aliased resampling. Downscaling widens the filter by the scale factor (as in area-weighted
// filtering), so detail finer than the output grid is averaged away instead of aliasing.
#pragma once

#include "comcl/imaging/image.h"

namespace comcl::imaging {

// Resamples to exactly width x height with a separable triangle (bilinear) filter, widened when shrinking.
Image resize(const Image& image, int width, int height);

struct Letterboxed {
  Image image;   // size x size
  Rect content;  // where the resized image sits; the rest is padding with value 0 (black)
};

// Fits the image into a size x size square keeping its aspect ratio: the longer side becomes `size`, the
// image is centred and the borders are padded with black (nothing of the film is cropped away).
Letterboxed letterbox(const Image& image, int size);

}  // namespace comcl::imaging
