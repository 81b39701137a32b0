#include "comcl/training/tensor_batch.h"

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

torch::Tensor unitFloatTensor(const std::uint8_t* raw, std::int64_t count, const storage::CacheFormat& format,
                              bool pinned) {
  torch::Tensor images = torch::empty({count, 1, format.size, format.size},
                                      torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(pinned));
  toUnitFloat(raw, static_cast<std::size_t>(images.numel()), format.bitsPerSample, images.data_ptr<float>());
  return images;
}

}  // namespace

torch::Tensor loadHostBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                            bool pinned) {
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
  return unitFloatTensor(raw.data(), static_cast<std::int64_t>(images.size()), format, pinned);
}

torch::Tensor loadBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                        torch::Device device) {
  return loadHostBatch(cache, images, device.is_cuda()).to(device, /*non_blocking=*/device.is_cuda());
}

torch::Tensor bytesToTensor(const void* bytes, std::int64_t count, const storage::CacheFormat& format) {
  checkDepth(format);
  return unitFloatTensor(static_cast<const std::uint8_t*>(bytes), count, format, false);
}

}  // namespace comcl::training
