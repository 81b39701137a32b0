// In-memory images shared by the imaging code: float samples in [0, 1], interleaved channels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace comcl::imaging {

struct Image {
  int width = 0;
  int height = 0;
  int channels = 1;           // 1 (grey) or 3 (RGB)
  std::vector<float> pixels;  // width * height * channels, row-major, values in [0, 1]

  Image() = default;
  Image(int w, int h, int c = 1)
      : width(w), height(h), channels(c), pixels(static_cast<std::size_t>(w) * h * c, 0.0f) {}
  bool empty() const { return pixels.empty(); }
  float& at(int x, int y, int c = 0) {
    return pixels[(static_cast<std::size_t>(y) * width + x) * channels + c];
  }
  float at(int x, int y, int c = 0) const {
    return pixels[(static_cast<std::size_t>(y) * width + x) * channels + c];
  }
};

// Images larger than this are refused as absurd, by the decoder and the PNG reader alike: 67 million
// pixels, over twice the largest projection radiographs (mammography and long-leg films reach about 30),
// and it bounds the memory one hostile header can make us allocate.
constexpr std::size_t kMaxImagePixels = std::size_t{1} << 26;

// A rectangle inside an image, in pixels.
struct Rect {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
};

// Luminance (ITU-R BT.601 weights) of an RGB image; a grey image is returned as is.
Image toGrey(const Image& image);
// The image with `channels` channels (1 or 3): RGB to luminance as toGrey, grey repeated into R, G and B, an
// image that already has them returned as is. Throws std::invalid_argument for other channel counts.
Image toChannels(const Image& image, int channels);

// Quantises [0, 1] samples to 8-bit (0..255) or 16-bit (0..65535) little-endian bytes, rounding to nearest.
// Samples outside [0, 1] are clamped (NaN becomes 0); all channels are written, interleaved.
// Throws std::invalid_argument unless bitsPerSample is 8 or 16.
std::vector<std::uint8_t> quantise(const Image& image, int bitsPerSample);
// The inverse of quantise() for a single-channel image.
Image dequantise(const std::uint8_t* bytes, int width, int height, int bitsPerSample);
// The inverse of quantise() for interleaved samples with `channels` channels.
Image dequantise(const std::uint8_t* bytes, int width, int height, int bitsPerSample, int channels);

}  // namespace comcl::imaging
