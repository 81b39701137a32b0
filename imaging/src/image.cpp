// Conversions between the float image representation and integer samples.
#include "comcl/imaging/image.h"

#include <cstddef>
#include <stdexcept>
#include <string>

namespace comcl::imaging {
namespace {

void checkBits(int bitsPerSample) {
  if (bitsPerSample != 8 && bitsPerSample != 16) {
    throw std::invalid_argument("bits per sample must be 8 or 16, got " + std::to_string(bitsPerSample));
  }
}

std::size_t sampleCount(int width, int height, int channels) {
  if (width < 0 || height < 0 || channels < 1) {
    throw std::invalid_argument("invalid image dimensions " + std::to_string(width) + "x" +
                                std::to_string(height) + "x" + std::to_string(channels));
  }
  return static_cast<std::size_t>(width) * static_cast<std::size_t>(height) *
         static_cast<std::size_t>(channels);
}

// Round to nearest after clamping to [0, 1]; NaN maps to 0 (a comparison with NaN is false).
inline unsigned toLevel(float value, float maxLevel) {
  if (!(value > 0.0f)) {
    return 0;
  }
  if (value >= 1.0f) {
    return static_cast<unsigned>(maxLevel);
  }
  return static_cast<unsigned>(value * maxLevel + 0.5f);
}

}  // namespace

Image toGrey(const Image& image) {
  if (image.channels == 1) {
    return image;
  }
  if (image.channels != 3) {
    throw std::invalid_argument("toGrey: expected 1 or 3 channels, got " + std::to_string(image.channels));
  }
  Image grey(image.width, image.height, 1);
  const std::size_t n = grey.pixels.size();
  if (image.pixels.size() != n * 3) {
    throw std::invalid_argument("toGrey: pixel buffer does not match the image size");
  }
  const float* src = image.pixels.data();
  float* dst = grey.pixels.data();
  for (std::size_t i = 0; i < n; ++i) {
    dst[i] = 0.299f * src[3 * i] + 0.587f * src[3 * i + 1] + 0.114f * src[3 * i + 2];
  }
  return grey;
}

Image toChannels(const Image& image, int channels) {
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("toChannels: expected 1 or 3 channels, got " + std::to_string(channels));
  if (image.channels == channels)
    return image;
  if (channels == 1)
    return toGrey(image);
  if (image.channels != 1)
    throw std::invalid_argument("toChannels: expected 1 or 3 channels, got " +
                                std::to_string(image.channels));
  Image colour(image.width, image.height, 3);
  const std::size_t n = image.pixels.size();
  if (colour.pixels.size() != n * 3)
    throw std::invalid_argument("toChannels: pixel buffer does not match the image size");
  for (std::size_t i = 0; i < n; ++i)
    colour.pixels[3 * i] = colour.pixels[3 * i + 1] = colour.pixels[3 * i + 2] = image.pixels[i];
  return colour;
}

std::vector<std::uint8_t> quantise(const Image& image, int bitsPerSample) {
  checkBits(bitsPerSample);
  const std::size_t n = sampleCount(image.width, image.height, image.channels);
  if (image.pixels.size() != n) {
    throw std::invalid_argument("quantise: pixel buffer does not match the image size");
  }
  const float* src = image.pixels.data();
  if (bitsPerSample == 8) {
    std::vector<std::uint8_t> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      out[i] = static_cast<std::uint8_t>(toLevel(src[i], 255.0f));
    }
    return out;
  }
  std::vector<std::uint8_t> out(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned level = toLevel(src[i], 65535.0f);
    out[2 * i] = static_cast<std::uint8_t>(level & 0xffu);
    out[2 * i + 1] = static_cast<std::uint8_t>(level >> 8);
  }
  return out;
}

Image dequantise(const std::uint8_t* bytes, int width, int height, int bitsPerSample) {
  return dequantise(bytes, width, height, bitsPerSample, 1);
}

Image dequantise(const std::uint8_t* bytes, int width, int height, int bitsPerSample, int channels) {
  checkBits(bitsPerSample);
  const std::size_t n = sampleCount(width, height, channels);
  if (bytes == nullptr && n > 0) {
    throw std::invalid_argument("dequantise: null input");
  }
  Image image(width, height, channels);
  float* dst = image.pixels.data();
  // Divide rather than multiply by a reciprocal: level / max is then the correctly rounded float, the
  // same value as a literal like 51.0f / 255.0f.
  if (bitsPerSample == 8) {
    for (std::size_t i = 0; i < n; ++i) {
      dst[i] = static_cast<float>(bytes[i]) / 255.0f;
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      const unsigned level =
          static_cast<unsigned>(bytes[2 * i]) | (static_cast<unsigned>(bytes[2 * i + 1]) << 8);
      dst[i] = static_cast<float>(level) / 65535.0f;
    }
  }
  return image;
}

}  // namespace comcl::imaging
