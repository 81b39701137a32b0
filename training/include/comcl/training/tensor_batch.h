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

// Reads the images into a float tensor of shape [N, C, size, size] with values in [0, 1] in host memory
// (page-locked when `pinned`, for an asynchronous copy to a GPU). C is `channels` (1 or 3), or the cache's
// channel count when 0: a grey cache read as 3 channels repeats the image in each, an RGB cache read as 1
// channel gives luminance (ITU-R BT.601 weights, as imaging::toGrey). Uses no tensor op, so it can run in
// data-loading threads without starting OpenMP teams there. Throws storage::CacheError for a slot that
// fails verification, std::invalid_argument for a channel count other than 0, 1 or 3.
torch::Tensor loadHostBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                            bool pinned = false, int channels = 0);

// The same batch on `device` (through page-locked memory for a GPU).
torch::Tensor loadBatch(const storage::ImageCache& cache, const std::vector<CachedImageRef>& images,
                        torch::Device device = torch::kCPU, int channels = 0);

// Converts raw cache bytes of `count` images to the float tensor described above (CPU).
torch::Tensor bytesToTensor(const void* bytes, std::int64_t count, const storage::CacheFormat& format,
                            int channels = 0);

// A batch [N, C, H, W] (C = 1 or 3) with `channels` channels, by the same rules, as tensor ops on its
// device (for images that are already tensors: a network made for other channels than its input).
torch::Tensor withChannels(const torch::Tensor& images, int channels);

}  // namespace comcl::training
