#include "grey_lut.h"

#include <algorithm>
#include <cmath>

namespace comcl::imaging::detail {

namespace {

// Tables are indexed by the stored bits only (the raw sample masked to BitsStored): bits above them carry
// nothing (overlays, garbage), and a 12-bit film needs 4,096 entries rather than 65,536.
std::size_t tableSize(const GreyFormat& f) {
  return std::size_t{1} << f.bitsStored;
}
std::uint32_t storedMask(const GreyFormat& f) {
  return static_cast<std::uint32_t>(tableSize(f) - 1);
}

std::int64_t storedValue(const GreyFormat& f, std::uint32_t raw) {
  const std::uint32_t mask = (f.bitsStored >= 32) ? 0xFFFFFFFFu : ((1u << f.bitsStored) - 1u);
  std::int64_t s = raw & mask;
  if (f.isSigned && (s >> (f.bitsStored - 1)) & 1)
    s -= (std::int64_t{1} << f.bitsStored);
  return s;
}

// VOI functions of PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID),
// with the output range [0, 1].
double applyWindow(const Window& w, double x) {
  switch (w.function) {
    case VoiFunction::Linear: {
      const double width = std::max(w.width - 1.0, 1e-9);
      return std::clamp((x - (w.center - 0.5)) / width + 0.5, 0.0, 1.0);
    }
    case VoiFunction::LinearExact:
      return std::clamp((x - w.center) / std::max(w.width, 1e-9) + 0.5, 0.0, 1.0);
    case VoiFunction::Sigmoid:
      return 1.0 / (1.0 + std::exp(-4.0 * (x - w.center) / std::max(w.width, 1e-9)));
  }
  return 0.0;
}

template <typename Sample>
void countSamples(const Sample* raw, std::size_t count, std::uint32_t mask,
                  std::vector<std::uint32_t>& histogram) {
  for (std::size_t i = 0; i < count; ++i)
    ++histogram[raw[i] & mask];
}

template <typename Sample>
void mapSamples(const Sample* raw, std::size_t count, std::uint32_t mask, const float* lut, float* out) {
  for (std::size_t i = 0; i < count; ++i)
    out[i] = lut[raw[i] & mask];
}

}  // namespace

double modalityValue(const GreyFormat& format, std::uint32_t raw) {
  return static_cast<double>(storedValue(format, raw)) * format.slope + format.intercept;
}

Window percentileWindow(const GreyFormat& format, const void* raw, std::size_t count, double clip) {
  // Histogram of raw samples, folded into stored values, walked in increasing modality order.
  std::vector<std::uint32_t> rawCounts(tableSize(format), 0);
  if (format.bitsAllocated == 8) {
    countSamples(static_cast<const std::uint8_t*>(raw), count, storedMask(format), rawCounts);
  } else {
    countSamples(static_cast<const std::uint16_t*>(raw), count, storedMask(format), rawCounts);
  }
  const std::int64_t lowest = format.isSigned ? -(std::int64_t{1} << (format.bitsStored - 1)) : 0;
  const std::size_t levels = std::size_t{1} << format.bitsStored;
  std::vector<std::uint64_t> stored(levels, 0);
  for (std::uint32_t r = 0; r < rawCounts.size(); ++r) {
    if (rawCounts[r] != 0)
      stored[static_cast<std::size_t>(storedValue(format, r) - lowest)] += rawCounts[r];
  }
  auto modalityAt = [&](std::size_t i) {
    return (static_cast<double>(lowest) + static_cast<double>(i)) * format.slope + format.intercept;
  };
  // With a negative slope, increasing stored values give decreasing modality values.
  const bool ascending = format.slope >= 0;
  auto levelAt = [&](std::size_t k) { return ascending ? k : levels - 1 - k; };
  const double below = clip * static_cast<double>(count);
  const double above = (1.0 - clip) * static_cast<double>(count);
  double lo = 0, hi = 0, seen = 0;
  bool haveLo = false;
  for (std::size_t k = 0; k < levels; ++k) {
    const std::size_t level = levelAt(k);
    if (stored[level] == 0)
      continue;
    seen += static_cast<double>(stored[level]);
    if (!haveLo && seen > below) {
      lo = modalityAt(level);
      haveLo = true;
    }
    hi = modalityAt(level);
    if (seen >= above)
      break;
  }
  Window w;
  w.function = VoiFunction::LinearExact;
  w.width = std::max(hi - lo, 1e-6);
  w.center = lo + w.width / 2;
  return w;
}

std::vector<float> buildLut(const GreyFormat& format, const Window& window) {
  std::vector<float> lut(tableSize(format));
  for (std::uint32_t r = 0; r < lut.size(); ++r) {
    const double v = applyWindow(window, modalityValue(format, r));
    lut[r] = static_cast<float>(format.monochrome1 ? 1.0 - v : v);
  }
  return lut;
}

Image applyLut(const GreyFormat& format, const void* raw, int width, int height,
               const std::vector<float>& lut) {
  Image out(width, height, 1);
  const std::size_t count = out.pixels.size();
  if (format.bitsAllocated == 8) {
    mapSamples(static_cast<const std::uint8_t*>(raw), count, storedMask(format), lut.data(),
               out.pixels.data());
  } else {
    mapSamples(static_cast<const std::uint16_t*>(raw), count, storedMask(format), lut.data(),
               out.pixels.data());
  }
  return out;
}

}  // namespace comcl::imaging::detail
