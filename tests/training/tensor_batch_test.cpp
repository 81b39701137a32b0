// Cached images become float tensors with the right shape, order and values, for both cache depths.
#include "comcl/training/tensor_batch.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "comcl/storage/cache_key.h"
#include "temp_dir.h"

namespace comcl::training {
namespace {

class TensorBatchTest : public ::testing::TestWithParam<int> {
 protected:
  comcl::testing::TempDir dir_;
};

// Image i holds value (i * 37 + x + 3 * y) modulo the sample range, so every image and pixel differs.
std::vector<std::uint8_t> pattern(int i, const storage::CacheFormat& f) {
  std::vector<std::uint8_t> bytes(f.imageBytes());
  const int maxValue = f.bitsPerSample == 8 ? 255 : 65535;
  for (int y = 0; y < f.size; ++y) {
    for (int x = 0; x < f.size; ++x) {
      const int v = (i * 37 + x + 3 * y) * (f.bitsPerSample == 8 ? 1 : 251) % (maxValue + 1);
      const std::size_t at = static_cast<std::size_t>(y * f.size + x);
      if (f.bitsPerSample == 8) {
        bytes[at] = static_cast<std::uint8_t>(v);
      } else {
        bytes[2 * at] = static_cast<std::uint8_t>(v & 0xFF);
        bytes[2 * at + 1] = static_cast<std::uint8_t>(v >> 8);
      }
    }
  }
  return bytes;
}

TEST_P(TensorBatchTest, LoadsImagesInTheRequestedOrderScaledToUnitRange) {
  const storage::CacheFormat format{16, GetParam()};
  storage::ImageCache cache(dir_.file("images.bin"), format);
  for (int i = 0; i < 5; ++i)
    cache.write(i, storage::cacheKey("image-" + std::to_string(i)), pattern(i, format).data());

  const std::vector<int> order = {3, 0, 4};
  std::vector<CachedImageRef> refs;
  for (int i : order)
    refs.push_back({i, storage::cacheKey("image-" + std::to_string(i))});
  torch::Tensor batch = loadBatch(cache, refs);

  ASSERT_EQ(batch.sizes(), (std::vector<std::int64_t>{3, 1, 16, 16}));
  EXPECT_EQ(batch.scalar_type(), torch::kFloat32);
  const double maxValue = format.bitsPerSample == 8 ? 255.0 : 65535.0;
  for (std::size_t b = 0; b < order.size(); ++b) {
    torch::Tensor expected = bytesToTensor(pattern(order[b], format).data(), 1, format)[0];
    EXPECT_TRUE(torch::allclose(batch[static_cast<std::int64_t>(b)], expected)) << "image " << order[b];
  }
  EXPECT_GE(batch.min().item<float>(), 0.0f);
  EXPECT_LE(batch.max().item<float>(), 1.0f);
  // A value above 32767 must not come out negative in 16-bit caches (LibTorch 1.13 has no uint16).
  const int probe = static_cast<int>(std::lround(batch[0][0][5][7].item<float>() * maxValue));
  const std::vector<std::uint8_t> raw = pattern(3, format);
  const int stored =
      format.bitsPerSample == 8 ? raw[5 * 16 + 7] : raw[2 * (5 * 16 + 7)] | raw[2 * (5 * 16 + 7) + 1] << 8;
  EXPECT_EQ(probe, stored);
}

TEST_P(TensorBatchTest, RefusesASlotStoredUnderAnotherKey) {
  const storage::CacheFormat format{8, GetParam()};
  storage::ImageCache cache(dir_.file("images.bin"), format);
  cache.write(0, storage::cacheKey("a"), pattern(0, format).data());
  EXPECT_THROW(loadBatch(cache, {{0, storage::cacheKey("b")}}), storage::CacheError);
}

TEST_P(TensorBatchTest, AnEmptyRequestGivesAnEmptyBatch) {
  const storage::CacheFormat format{8, GetParam()};
  storage::ImageCache cache(dir_.file("images.bin"), format);
  EXPECT_EQ(loadBatch(cache, {}).size(0), 0);
}

INSTANTIATE_TEST_SUITE_P(Depths, TensorBatchTest, ::testing::Values(8, 16));

}  // namespace
}  // namespace comcl::training
