// Batches of cached images as LibTorch tensors: the bridge between the image cache and every training method.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "comcl/storage/image_cache.h"

namespace comcl::training {

struct CachedImageRef {
  std::int64_t slot = 0;
  std::uint64_t key = 0;  // storage::cacheKey(resourceId)
};

// Reads the images into a float tensor of shape [N, 1, size, size] with values in [0, 1] in host memory
// (page-locked when `pinned`, for an asynchronous copy to a GPU). Uses no tensor op, so it can run in
// data-loading threads without starting OpenMP teams there. Throws storage::CacheError for a slot that
// fails verification.
torch::Tensor loadHostBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                            bool pinned = false);

// The same batch on `device` (through page-locked memory for a GPU).
torch::Tensor loadBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                        torch::Device device = torch::kCPU);

// Converts raw cache bytes of `count` images to the float tensor described above (CPU).
torch::Tensor bytesToTensor(const void* bytes, std::int64_t count, const storage::CacheFormat& format);

}  // namespace comcl::training
