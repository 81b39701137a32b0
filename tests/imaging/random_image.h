// Random test images in [0, 1] from a fixed seed.
#pragma once

#include <random>

#include "comcl/imaging/image.h"

namespace comcl::imaging::testing {

inline Image randomImage(int width, int height, int channels, unsigned seed) {
  Image image(width, height, channels);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0.0f, 1.0f);
  for (float& v : image.pixels)
    v = dist(rng);
  return image;
}

}  // namespace comcl::imaging::testing
