// The fast path for plain greyscale images: modality rescale, VOI window and MONOCHROME1 inversion folded
// into one lookup table indexed by the raw sample, applied in a single pass over the pixels. Internal to
// imaging/; decode.cpp chooses it for 8/16-bit MONOCHROME1/2 images without LUT sequences.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "comcl/imaging/image.h"

namespace comcl::imaging::detail {

struct GreyFormat {
  int bitsAllocated = 16;  // 8 or 16
  int bitsStored = 12;     // high bit is bitsStored - 1
  bool isSigned = false;
  bool monochrome1 = false;
  double slope = 1.0;
  double intercept = 0.0;
};

enum class VoiFunction { Linear, LinearExact, Sigmoid };  // PS3.3 C.11.2.1.2 / C.11.2.1.3

struct Window {
  double center = 0;
  double width = 1;
  VoiFunction function = VoiFunction::Linear;
};

// Modality value of a raw sample (bits above bitsStored ignored, sign-extended when signed).
double modalityValue(const GreyFormat& format, std::uint32_t raw);

// Window spanning the `clip` and `1 - clip` quantiles of the modality values of `count` raw samples
// (LinearExact, so that the quantiles map to exactly 0 and 1).
Window percentileWindow(const GreyFormat& format, const void* raw, std::size_t count, double clip);

// Output in [0, 1] (bright = dense) for every stored value: 2^BitsStored entries, indexed by the raw
// sample masked to its stored bits.
std::vector<float> buildLut(const GreyFormat& format, const Window& window);

// Maps width * height raw samples through the table into a single-channel image.
Image applyLut(const GreyFormat& format, const void* raw, int width, int height,
               const std::vector<float>& lut);

}  // namespace comcl::imaging::detail
