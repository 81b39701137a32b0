#include "comcl/training/tensor_batch.h"

#include <stdexcept>

namespace comcl::training {

namespace {

// LibTorch 1.13 has no uint16 dtype: 16-bit images are read as int16 and the sign bit folded back.
torch::Tensor toUnitFloat(const torch::Tensor& raw, int bitsPerSample) {
  if (bitsPerSample == 8)
    return raw.to(torch::kFloat32).div_(255.0f);
  return raw.to(torch::kInt32).bitwise_and_(0xFFFF).to(torch::kFloat32).div_(65535.0f);
}

torch::ScalarType rawType(const storage::CacheFormat& format) {
  if (format.bitsPerSample != 8 && format.bitsPerSample != 16) {
    throw std::invalid_argument("cache images must be 8 or 16 bits, not " +
                                std::to_string(format.bitsPerSample));
  }
  return format.bitsPerSample == 8 ? torch::kUInt8 : torch::kInt16;
}

}  // namespace

torch::Tensor loadBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                        torch::Device device) {
  const storage::CacheFormat& format = cache.format();
  const auto n = static_cast<std::int64_t>(images.size());
  torch::Tensor raw =
      torch::empty({n, 1, format.size, format.size}, torch::TensorOptions().dtype(rawType(format)));
  std::vector<std::int64_t> slots;
  std::vector<std::uint64_t> keys;
  slots.reserve(images.size());
  keys.reserve(images.size());
  for (const auto& image : images) {
    slots.push_back(image.slot);
    keys.push_back(image.key);
  }
  if (n > 0)
    cache.readBatch(slots, keys, raw.data_ptr());
  return toUnitFloat(raw, format.bitsPerSample).to(device);
}

torch::Tensor bytesToTensor(const void* bytes, std::int64_t count, const storage::CacheFormat& format) {
  const torch::ScalarType type = rawType(format);
  // from_blob does not copy; the clone inside toUnitFloat's conversion owns the result.
  torch::Tensor raw = torch::from_blob(const_cast<void*>(bytes), {count, 1, format.size, format.size},
                                       torch::TensorOptions().dtype(type));
  return toUnitFloat(raw, format.bitsPerSample);
}

}  // namespace comcl::training
