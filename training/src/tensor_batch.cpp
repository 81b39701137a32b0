#include "comcl/training/tensor_batch.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace comcl::training {

namespace {

void checkDepth(const storage::CacheFormat& format) {
  if (format.bitsPerSample != 8 && format.bitsPerSample != 16) {
    throw std::invalid_argument("cache images must be 8 or 16 bits, not " +
                                std::to_string(format.bitsPerSample));
  }
}

// Plain loops rather than tensor ops: the loader threads call this beside the training step, and a tensor
// op there would start an OpenMP team of its own. libgomp then sees more threads than cores, stops spinning
// at its barriers and puts the compute threads to sleep at every one of them (measured: ~30,000 context
// switches and 10-20 % of the step time at 64 px).
void toUnitFloat(const std::uint8_t* raw, std::size_t samples, int bitsPerSample, float* out) {
  if (bitsPerSample == 8) {
    for (std::size_t i = 0; i < samples; ++i)
      out[i] = static_cast<float>(raw[i]) / 255.0f;
    return;
  }
  for (std::size_t i = 0; i < samples; ++i) {
    std::uint16_t value;  // native byte order, as the cache stores it
    std::memcpy(&value, raw + 2 * i, sizeof value);
    out[i] = static_cast<float>(value) / 65535.0f;
  }
}

// ITU-R BT.601 luminance, as imaging::toGrey (training/ does not depend on imaging/).
constexpr float kLuminance[3] = {0.299f, 0.587f, 0.114f};

int outputChannels(const storage::CacheFormat& format, int channels) {
  if (channels != 0 && channels != 1 && channels != 3)
    throw std::invalid_argument("images can be read with 1 or 3 channels, not " + std::to_string(channels));
  return channels == 0 ? format.channels : channels;
}

// Interleaved cache samples (H x W x cached channels per image) to planes [count, channels, H, W]: the cached
// planes as they are, grey repeated into three planes, or RGB reduced to luminance.
torch::Tensor unitFloatTensor(const std::uint8_t* raw, std::int64_t count, const storage::CacheFormat& format,
                              int channels, bool pinned) {
  const int cached = format.channels;
  const int wanted = outputChannels(format, channels);
  torch::Tensor images = torch::empty({count, wanted, format.size, format.size},
                                      torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(pinned));
  float* out = images.data_ptr<float>();
  if (cached == 1 && wanted == 1) {
    toUnitFloat(raw, static_cast<std::size_t>(images.numel()), format.bitsPerSample, out);
    return images;
  }
  const std::size_t plane = static_cast<std::size_t>(format.size) * static_cast<std::size_t>(format.size);
  const std::size_t bytesPerSample = format.bitsPerSample == 16 ? 2 : 1;
  std::vector<float> samples(plane * static_cast<std::size_t>(cached));
  for (std::int64_t n = 0; n < count; ++n) {
    toUnitFloat(raw + static_cast<std::size_t>(n) * samples.size() * bytesPerSample, samples.size(),
                format.bitsPerSample, samples.data());
    float* image = out + static_cast<std::size_t>(n) * plane * static_cast<std::size_t>(wanted);
    if (cached == 1) {  // grey into R, G and B
      for (int c = 0; c < wanted; ++c)
        std::copy(samples.begin(), samples.end(), image + static_cast<std::size_t>(c) * plane);
    } else if (wanted == 3) {
      for (std::size_t i = 0; i < plane; ++i)
        for (std::size_t c = 0; c < 3; ++c)
          image[c * plane + i] = samples[3 * i + c];
    } else {
      for (std::size_t i = 0; i < plane; ++i)
        image[i] = kLuminance[0] * samples[3 * i] + kLuminance[1] * samples[3 * i + 1] +
                   kLuminance[2] * samples[3 * i + 2];
    }
  }
  return images;
}

}  // namespace

torch::Tensor loadHostBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                            bool pinned, int channels) {
  const storage::CacheFormat& format = cache.format();
  checkDepth(format);
  std::vector<std::int64_t> slots;
  std::vector<std::uint64_t> keys;
  slots.reserve(images.size());
  keys.reserve(images.size());
  for (const auto& image : images) {
    slots.push_back(image.slot);
    keys.push_back(image.key);
  }
  std::vector<std::uint8_t> raw(images.size() * format.imageBytes());
  if (!images.empty())
    cache.readBatch(slots, keys, raw.data());
  return unitFloatTensor(raw.data(), static_cast<std::int64_t>(images.size()), format, channels, pinned);
}

torch::Tensor loadBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                        torch::Device device, int channels) {
  return loadHostBatch(cache, images, device.is_cuda(), channels)
      .to(device, /*non_blocking=*/device.is_cuda());
}

torch::Tensor bytesToTensor(const void* bytes, std::int64_t count, const storage::CacheFormat& format,
                            int channels) {
  checkDepth(format);
  return unitFloatTensor(static_cast<const std::uint8_t*>(bytes), count, format, channels, false);
}

torch::Tensor withChannels(const torch::Tensor& images, int channels) {
  if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3))
    throw std::invalid_argument("withChannels: expected a [N, 1 or 3, H, W] batch");
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("images can be read with 1 or 3 channels, not " + std::to_string(channels));
  if (images.size(1) == channels)
    return images;
  if (channels == 3)
    return images.expand({images.size(0), 3, images.size(2), images.size(3)});
  const torch::Tensor weights =
      torch::tensor({kLuminance[0], kLuminance[1], kLuminance[2]}, images.options()).reshape({1, 3, 1, 1});
  return (images * weights).sum(1, /*keepdim=*/true);
}

}  // namespace comcl::training
