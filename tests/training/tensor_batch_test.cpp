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

// Colour caches: RGB planes come out of the interleaved samples; reading them as one channel gives
// luminance, and a grey cache read as three channels repeats the image, the same as withChannels does
// with tensor ops.
TEST(TensorBatchChannels, ColourAndGreyCachesReadWithEitherChannelCount) {
  comcl::testing::TempDir dir;
  const storage::CacheFormat colour{4, 8, 3};
  storage::ImageCache rgb(dir.file("rgb.bin"), colour);
  std::vector<std::uint8_t> bytes(colour.imageBytes());
  for (std::size_t i = 0; i < bytes.size(); ++i)
    bytes[i] = static_cast<std::uint8_t>(i % 3 == 0 ? 200 : i % 3 == 1 ? 100 : 10 + i);  // R, G, B
  rgb.write(0, storage::cacheKey("fundus"), bytes.data());
  const std::vector<CachedImageRef> refs{{0, storage::cacheKey("fundus")}};

  const torch::Tensor planes = loadBatch(rgb, refs);
  ASSERT_EQ(planes.sizes(), (std::vector<std::int64_t>{1, 3, 4, 4}));
  EXPECT_TRUE(torch::allclose(planes[0][0], torch::full({4, 4}, 200.0f / 255)));
  EXPECT_TRUE(torch::allclose(planes[0][1], torch::full({4, 4}, 100.0f / 255)));
  EXPECT_FLOAT_EQ(planes[0][2][1][2].item<float>(), static_cast<float>(10 + 3 * 6 + 2) / 255);  // pixel 6

  const torch::Tensor grey = loadBatch(rgb, refs, torch::kCPU, 1);
  ASSERT_EQ(grey.sizes(), (std::vector<std::int64_t>{1, 1, 4, 4}));
  const float expected = (0.299f * 200 + 0.587f * 100 + 0.114f * (10 + 3 * 6 + 2)) / 255;
  EXPECT_NEAR(grey[0][0][1][2].item<float>(), expected, 1e-6);
  EXPECT_TRUE(torch::allclose(grey, withChannels(planes, 1), 1e-6, 1e-6));

  const storage::CacheFormat mono{4, 16};
  storage::ImageCache greyCache(dir.file("grey.bin"), mono);
  greyCache.write(0, storage::cacheKey("film"), pattern(2, mono).data());
  const std::vector<CachedImageRef> film{{0, storage::cacheKey("film")}};
  const torch::Tensor repeated = loadBatch(greyCache, film, torch::kCPU, 3);
  ASSERT_EQ(repeated.sizes(), (std::vector<std::int64_t>{1, 3, 4, 4}));
  EXPECT_TRUE(torch::equal(repeated, withChannels(loadBatch(greyCache, film), 3)));
  EXPECT_TRUE(torch::equal(repeated[0][0], repeated[0][2]));
  EXPECT_THROW(loadBatch(greyCache, film, torch::kCPU, 2), std::invalid_argument);
}

}  // namespace
}  // namespace comcl::training
