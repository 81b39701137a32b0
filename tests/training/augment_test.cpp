// Random views: each stage does what it says on small images, draws follow the config, seeds reproduce.
#include "comcl/training/augment.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/torch.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>

namespace comcl::training {
namespace {

namespace F = torch::nn::functional;

constexpr double kPi = 3.14159265358979323846;

torch::Tensor randomImages(std::int64_t n, std::int64_t c, std::int64_t h, std::int64_t w,
                           std::uint64_t seed = 1) {
  torch::manual_seed(seed);
  return torch::rand({n, c, h, w});
}

torch::Tensor bilinearResize(const torch::Tensor& images, std::int64_t size) {
  return F::interpolate(images, F::InterpolateFuncOptions()
                                    .size(std::vector<std::int64_t>{size, size})
                                    .mode(torch::kBilinear)
                                    .align_corners(false));
}

double maxDifference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// A Gaussian spot of width `sigma` pixels centred (dx, dy) pixels from the image centre.
torch::Tensor spot(std::int64_t size, double dx, double dy, double sigma) {
  const torch::Tensor coordinate = torch::arange(size, torch::kFloat) + 0.5 - size / 2.0;
  const torch::Tensor x = (coordinate - dx).view({1, -1});
  const torch::Tensor y = (coordinate - dy).view({-1, 1});
  return torch::exp(-(x * x + y * y) / (2 * sigma * sigma)).view({1, 1, size, size});
}

// Centre of mass of each image, relative to the image centre: [N, 2] as (x, y).
torch::Tensor centroids(const torch::Tensor& images) {
  const std::int64_t size = images.size(3);
  const torch::Tensor coordinate = torch::arange(size, torch::kFloat) + 0.5 - size / 2.0;
  const torch::Tensor mass = images.sum({1, 2, 3});
  const torch::Tensor x = (images * coordinate.view({1, 1, 1, -1})).sum({1, 2, 3}) / mass;
  const torch::Tensor y = (images * coordinate.view({1, 1, -1, 1})).sum({1, 2, 3}) / mass;
  return torch::stack({x, y}, 1);
}

double laplacianVariance(const torch::Tensor& images) {
  const torch::Tensor kernel =
      torch::tensor({0.f, 1.f, 0.f, 1.f, -4.f, 1.f, 0.f, 1.f, 0.f}).view({1, 1, 3, 3});
  return F::conv2d(images, kernel).var().item<double>();
}

void expectInvalidNaming(const AugmentConfig& config, const std::string& field) {
  try {
    config.validate();
    ADD_FAILURE() << "no exception for " << field;
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
  }
  EXPECT_THROW(Augmenter{config}, std::invalid_argument);
}

void expectJsonInvalidNaming(const nlohmann::json& json, const std::string& field) {
  try {
    AugmentConfig::fromJson(json);
    ADD_FAILURE() << "no exception for " << json.dump();
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Config

TEST(AugmentConfigTest, PresetsAreValidAndRoundTripThroughJson) {
  const AugmentConfig moco = mocoV2Augment(224);
  EXPECT_DOUBLE_EQ(moco.scaleMin, 0.2);
  EXPECT_DOUBLE_EQ(moco.blurProbability, 0.5);
  EXPECT_DOUBLE_EQ(moco.jitterProbability, 0.8);
  EXPECT_DOUBLE_EQ(moco.maxRotationDegrees, 0);
  const AugmentConfig medAug = medAugAugment(320);
  EXPECT_EQ(medAug.outputSize, 320);
  EXPECT_DOUBLE_EQ(medAug.scaleMin, 0.95);
  EXPECT_DOUBLE_EQ(medAug.maxRotationDegrees, 10);
  EXPECT_DOUBLE_EQ(medAug.jitterProbability, 0);
  EXPECT_DOUBLE_EQ(medAug.blurProbability, 0);
  for (const AugmentConfig& config : {moco, medAug, noAugment(64), AugmentConfig{}}) {
    EXPECT_NO_THROW(config.validate());
    EXPECT_EQ(AugmentConfig::fromJson(config.toJson()).toJson(), config.toJson());
  }
  const AugmentConfig partial = AugmentConfig::fromJson({{"outputSize", 96}, {"flipProbability", 0.25}});
  EXPECT_EQ(partial.outputSize, 96);
  EXPECT_DOUBLE_EQ(partial.flipProbability, 0.25);
  EXPECT_DOUBLE_EQ(partial.scaleMin, AugmentConfig{}.scaleMin);
}

TEST(AugmentConfigTest, OutOfRangeValuesThrowNamingTheField) {
  AugmentConfig config;
  config.scaleMin = 0.9;
  config.scaleMax = 0.5;
  expectInvalidNaming(config, "scaleMin");
  config = AugmentConfig{};
  config.flipProbability = 1.5;
  expectInvalidNaming(config, "flipProbability");
  config = AugmentConfig{};
  config.blurProbability = -0.1;
  expectInvalidNaming(config, "blurProbability");
  config = AugmentConfig{};
  config.outputSize = 0;
  expectInvalidNaming(config, "outputSize");
  config = AugmentConfig{};
  config.ratioMin = 0;
  expectInvalidNaming(config, "ratioMin");
  config = AugmentConfig{};
  config.brightness = std::nan("");
  expectInvalidNaming(config, "brightness");
  config = AugmentConfig{};
  config.blurSigmaMin = 3;
  expectInvalidNaming(config, "blurSigmaMin");
  config = AugmentConfig{};
  config.maxRotationDegrees = 200;
  expectInvalidNaming(config, "maxRotationDegrees");
}

TEST(AugmentConfigTest, FromJsonRejectsUnknownKeysWrongTypesAndBadValues) {
  expectJsonInvalidNaming({{"outputSize", 64}, {"scaleMinimum", 0.5}}, "scaleMinimum");
  expectJsonInvalidNaming({{"outputSize", "large"}}, "outputSize");
  expectJsonInvalidNaming({{"outputSize", 64.5}}, "outputSize");
  expectJsonInvalidNaming({{"contrast", "strong"}}, "contrast");
  expectJsonInvalidNaming({{"jitterProbability", 2}}, "jitterProbability");
  EXPECT_THROW(AugmentConfig::fromJson(nlohmann::json::array()), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------------------
// Geometry

TEST(AugmenterTest, NoAugmentIsABilinearResizeAndDrawsNothing) {
  std::mt19937_64 rng(5);
  const std::mt19937_64 before = rng;
  const Augmenter augment(noAugment(24));
  for (const auto& images :
       {randomImages(2, 1, 40, 40), randomImages(2, 1, 16, 16), randomImages(2, 1, 30, 40)}) {
    const torch::Tensor views = augment(images, rng);
    ASSERT_EQ(views.sizes(), (std::vector<std::int64_t>{2, 1, 24, 24}));
    EXPECT_LT(maxDifference(views, bilinearResize(images, 24)), 1e-5);
  }
  EXPECT_TRUE(rng == before);
}

TEST(AugmenterTest, FullSquareCropOfTheOutputSizeReturnsTheInput) {
  AugmentConfig config = noAugment(20);
  config.ratioMin = config.ratioMax = 1;
  const torch::Tensor images = randomImages(3, 1, 20, 20);
  std::mt19937_64 rng(1);
  EXPECT_LT(maxDifference(Augmenter(config)(images, rng), images), 1e-5);
}

TEST(AugmenterTest, FlipProbabilityOneMirrorsLeftRight) {
  AugmentConfig config = noAugment(16);
  config.flipProbability = 1;
  const Augmenter augment(config);
  const torch::Tensor images = randomImages(3, 1, 16, 16);
  std::mt19937_64 rng(2);
  const ViewParams params = augment.drawParams(3, 16, 16, rng);
  EXPECT_TRUE(params.flip.all().item<bool>());
  EXPECT_LT(maxDifference(augment.apply(images, params), images.flip({3})), 1e-5);
}

TEST(AugmenterTest, RotationKeepsACentredDiscUnchanged) {
  AugmentConfig config = noAugment(32);
  config.maxRotationDegrees = 45;
  const Augmenter augment(config);
  const torch::Tensor disc = spot(32, 0, 0, 5).expand({4, 1, 32, 32}).contiguous();
  std::mt19937_64 rng(3);
  const ViewParams params = augment.drawParams(4, 32, 32, rng);
  EXPECT_GT(params.angleDegrees.abs().max().item<double>(), 5);
  EXPECT_LT(maxDifference(augment.apply(disc, params), disc), 0.02);
}

TEST(AugmenterTest, QuarterTurnsMatchRot90) {
  const Augmenter augment(noAugment(16));
  const torch::Tensor images = randomImages(2, 1, 16, 16);
  ViewParams params = ViewParams::identity(2, 16, 16);
  params.angleDegrees[0] = 90.0;
  params.angleDegrees[1] = -90.0;
  const torch::Tensor views = augment.apply(images, params);
  // Counter-clockwise on screen: the right edge goes to the top.
  EXPECT_LT(maxDifference(views[0], torch::rot90(images[0], 1, {1, 2})), 1e-5);
  EXPECT_LT(maxDifference(views[1], torch::rot90(images[1], -1, {1, 2})), 1e-5);
}

TEST(AugmenterTest, DrawnRotationsMoveAnOffCentreSpotAlongTheCircle) {
  AugmentConfig config = noAugment(32);
  config.maxRotationDegrees = 90;
  const Augmenter augment(config);
  const double radius = 8;
  const torch::Tensor images = spot(32, radius, 0, 1.5).expand({8, 1, 32, 32}).contiguous();
  std::mt19937_64 rng(4);
  const ViewParams params = augment.drawParams(8, 32, 32, rng);
  const torch::Tensor angles = params.angleDegrees;
  EXPECT_LE(angles.abs().max().item<double>(), 90);
  EXPECT_GT(angles.abs().max().item<double>(), 45);
  const torch::Tensor centres = centroids(augment.apply(images, params));
  for (std::int64_t n = 0; n < 8; ++n) {
    const double radians = angles[n].item<double>() * kPi / 180;
    // y points down, so a counter-clockwise turn takes (r, 0) to (r cos, -r sin).
    EXPECT_NEAR(centres[n][0].item<double>(), radius * std::cos(radians), 0.1) << "sample " << n;
    EXPECT_NEAR(centres[n][1].item<double>(), -radius * std::sin(radians), 0.1) << "sample " << n;
  }
}

TEST(AugmenterTest, LeftHalfBoxGivesTheLeftHalfUpsampled) {
  const Augmenter augment(noAugment(16));
  const torch::Tensor images = randomImages(2, 1, 16, 16);
  ViewParams params = ViewParams::identity(2, 16, 16);
  params.cropBox.select(1, 2).fill_(8);
  const torch::Tensor views = augment.apply(images, params);
  const torch::Tensor expected = bilinearResize(images.slice(3, 0, 8), 16);
  // The last column reads between the box's last column and the next one, which the slice does not have.
  EXPECT_LT(maxDifference(views.slice(3, 0, 15), expected.slice(3, 0, 15)), 1e-5);
}

TEST(AugmenterTest, ViewsReachingOutsideTheImageAreBlackThere) {
  const Augmenter augment(noAugment(16));
  const torch::Tensor images = torch::ones({1, 1, 16, 16});
  ViewParams params = ViewParams::identity(1, 16, 16);
  params.cropBox[0][0] = 8.0;  // the right half of the box lies beyond the image
  const torch::Tensor views = augment.apply(images, params);
  EXPECT_EQ(views.slice(3, 0, 8).min().item<float>(), 1.f);
  EXPECT_EQ(views.slice(3, 8, 16).max().item<float>(), 0.f);
}

TEST(AugmenterTest, LargeCropsAreAveragedBeforeSampling) {
  // One bright column in four: shrunk 4x it must keep its mean brightness, where plain bilinear sampling
  // would read only the dark columns.
  const torch::Tensor columns = torch::remainder(torch::arange(64), 4).eq(0).to(torch::kFloat);
  const torch::Tensor images = columns.view({1, 1, 1, 64}).expand({2, 1, 64, 64}).contiguous();
  std::mt19937_64 rng(6);
  const torch::Tensor views = Augmenter(noAugment(16))(images, rng);
  EXPECT_LT((views - 0.25).abs().max().item<double>(), 1e-6);
}

// ---------------------------------------------------------------------------------------------------------
// Intensity and blur

TEST(AugmenterTest, BrightnessMultipliesAndClamps) {
  const Augmenter augment(noAugment(16));
  const torch::Tensor images = randomImages(2, 1, 16, 16);
  ViewParams params = ViewParams::identity(2, 16, 16);
  params.brightness[0] = 0.5;
  params.brightness[1] = 1.5;
  const torch::Tensor views = augment.apply(images, params);
  EXPECT_LT(maxDifference(views[0], images[0] * 0.5), 1e-6);
  EXPECT_LT(maxDifference(views[1], (images[1] * 1.5).clamp(0, 1)), 1e-6);
  EXPECT_EQ(views[1].max().item<float>(), 1.f);
}

TEST(AugmenterTest, ContrastKeepsThePerImageMeanAndScalesDeviations) {
  const Augmenter augment(noAugment(16));
  const torch::Tensor images = randomImages(2, 1, 16, 16);
  ViewParams params = ViewParams::identity(2, 16, 16);
  params.contrast.fill_(0.5);
  const torch::Tensor views = augment.apply(images, params);
  for (std::int64_t n = 0; n < 2; ++n) {
    EXPECT_NEAR(views[n].mean().item<double>(), images[n].mean().item<double>(), 1e-6);
    EXPECT_NEAR(views[n].std().item<double>(), 0.5 * images[n].std().item<double>(), 1e-6);
  }
}

TEST(AugmenterTest, StrongRandomViewsStayInTheUnitRange) {
  AugmentConfig config = mocoV2Augment(24);
  config.brightness = 1;
  config.contrast = 1;
  config.jitterProbability = 1;
  config.maxRotationDegrees = 30;
  std::mt19937_64 rng(7);
  const torch::Tensor views = Augmenter(config)(randomImages(16, 1, 32, 32), rng);
  EXPECT_GE(views.min().item<float>(), 0.f);
  EXPECT_LE(views.max().item<float>(), 1.f);
}

TEST(AugmenterTest, TinyBlurIsTheIdentity) {
  const Augmenter augment(noAugment(16));
  const torch::Tensor images = randomImages(2, 1, 16, 16);
  ViewParams params = ViewParams::identity(2, 16, 16);
  params.blurSigma.fill_(0.1);
  EXPECT_LT(maxDifference(augment.apply(images, params), images), 1e-6);
}

TEST(AugmenterTest, LargeBlurSmoothsAndKeepsAConstantImageConstant) {
  const Augmenter augment(noAugment(24));
  ViewParams params = ViewParams::identity(2, 24, 24);
  params.blurSigma.fill_(2.0);
  const torch::Tensor noise = randomImages(2, 1, 24, 24);
  EXPECT_LT(laplacianVariance(augment.apply(noise, params)), 0.05 * laplacianVariance(noise));
  // Reflect padding: no dark border (a single image, a single convolution group).
  const torch::Tensor grey = torch::full({1, 1, 24, 24}, 0.7f);
  ViewParams one = ViewParams::identity(1, 24, 24);
  one.blurSigma.fill_(2.0);
  EXPECT_LT(maxDifference(augment.apply(grey, one), grey), 1e-6);
}

TEST(AugmenterTest, BlurChangesOnlyTheSamplesDrawnWithBlur) {
  AugmentConfig config = noAugment(16);
  config.blurProbability = 0.5;
  config.blurSigmaMin = 1;
  config.blurSigmaMax = 2;
  const Augmenter augment(config);
  const torch::Tensor images = randomImages(16, 1, 16, 16);
  std::mt19937_64 rng(8);
  const ViewParams params = augment.drawParams(16, 16, 16, rng);
  const torch::Tensor views = augment.apply(images, params);
  int blurred = 0;
  for (std::int64_t n = 0; n < 16; ++n) {
    const double sigma = params.blurSigma[n].item<double>();
    const double change = maxDifference(views[n], images[n]);
    if (sigma > 0) {
      ++blurred;
      EXPECT_GE(sigma, 1);
      EXPECT_GT(change, 0.05) << "sample " << n;
    } else {
      EXPECT_LT(change, 1e-6) << "sample " << n;
    }
  }
  EXPECT_GT(blurred, 2);
  EXPECT_LT(blurred, 14);
}

// ---------------------------------------------------------------------------------------------------------
// Draws

TEST(AugmenterTest, DrawnCropsRespectScaleAndRatioAndFlipsFollowTheirRate) {
  AugmentConfig config = noAugment(32);
  config.scaleMin = 0.3;
  config.scaleMax = 0.6;
  config.flipProbability = 0.3;
  const Augmenter augment(config);
  std::mt19937_64 rng(9);
  const std::int64_t count = 4000;
  const ViewParams params = augment.drawParams(count, 100, 120, rng);
  const torch::Tensor box = params.cropBox;
  const torch::Tensor left = box.select(1, 0), top = box.select(1, 1);
  const torch::Tensor width = box.select(1, 2), height = box.select(1, 3);
  // Every draw of this range fits the first time, so no box is the fallback.
  const torch::Tensor area = width * height / (100.0 * 120.0);
  EXPECT_GE(area.min().item<double>(), 0.3 - 1e-9);
  EXPECT_LE(area.max().item<double>(), 0.6 + 1e-9);
  EXPECT_NEAR(area.mean().item<double>(), 0.45, 0.01);
  const torch::Tensor ratio = width / height;
  EXPECT_GE(ratio.min().item<double>(), 0.75 - 1e-9);
  EXPECT_LE(ratio.max().item<double>(), 4.0 / 3 + 1e-9);
  EXPECT_GE(left.min().item<double>(), 0);
  EXPECT_GE(top.min().item<double>(), 0);
  EXPECT_LE((left + width).max().item<double>(), 120 + 1e-9);
  EXPECT_LE((top + height).max().item<double>(), 100 + 1e-9);
  EXPECT_NEAR(params.flip.to(torch::kDouble).mean().item<double>(), 0.3, 0.03);
}

TEST(AugmenterTest, MedAugCropsAreNearlyWholeAndFallBackToTheWholeImage) {
  const Augmenter augment(medAugAugment(32));
  std::mt19937_64 rng(10);
  const ViewParams params = augment.drawParams(500, 64, 64, rng);
  const torch::Tensor box = params.cropBox;
  const torch::Tensor area = box.select(1, 2) * box.select(1, 3) / (64.0 * 64.0);
  EXPECT_GE(area.min().item<double>(), 0.95 - 1e-9);
  EXPECT_LE(area.max().item<double>(), 1 + 1e-9);
  // Most (area, ratio) draws of this narrow range do not fit a square, so many views use the whole image.
  EXPECT_GT(area.eq(1).sum().item<std::int64_t>(), 50);
  EXPECT_LE(params.angleDegrees.abs().max().item<double>(), 10);
}

TEST(AugmenterTest, SameSeedGivesTheSameViewsAndAnotherSeedOtherViews) {
  AugmentConfig config = mocoV2Augment(24);
  config.maxRotationDegrees = 10;
  const Augmenter augment(config);
  const torch::Tensor images = randomImages(4, 1, 32, 32);
  std::mt19937_64 first(11), second(11), other(12);
  const torch::Tensor views = augment(images, first);
  EXPECT_TRUE(torch::equal(views, augment(images, second)));
  EXPECT_GT(maxDifference(views, augment(images, other)), 0.05);
  std::mt19937_64 rng(13);
  const ViewParams params = augment.drawParams(4, 32, 32, rng);
  EXPECT_TRUE(torch::equal(augment.apply(images, params), augment.apply(images, params)));
}

// ---------------------------------------------------------------------------------------------------------
// Shapes and devices

TEST(AugmenterTest, ThreeChannelGreyGivesTheSameViewsAsOneChannel) {
  const Augmenter augment(mocoV2Augment(24));
  const torch::Tensor grey = randomImages(4, 1, 32, 32);
  std::mt19937_64 rngGrey(14), rngColour(14);
  const torch::Tensor greyViews = augment(grey, rngGrey);
  const torch::Tensor colourViews = augment(grey.expand({4, 3, 32, 32}).contiguous(), rngColour);
  ASSERT_EQ(colourViews.sizes(), (std::vector<std::int64_t>{4, 3, 24, 24}));
  for (std::int64_t c = 0; c < 3; ++c)
    EXPECT_LT(maxDifference(colourViews.select(1, c), greyViews.select(1, 0)), 1e-5);
}

TEST(AugmenterTest, RejectsOtherRanksIntegerImagesAndMismatchedParams) {
  const Augmenter augment(mocoV2Augment(16));
  std::mt19937_64 rng(15);
  EXPECT_THROW(augment(torch::rand({1, 16, 16}), rng), std::invalid_argument);
  EXPECT_THROW(augment(torch::rand({1, 1, 1, 16, 16}), rng), std::invalid_argument);
  EXPECT_THROW(augment(torch::zeros({1, 1, 16, 16}, torch::kUInt8), rng), std::invalid_argument);
  const ViewParams params = augment.drawParams(2, 16, 16, rng);
  EXPECT_THROW(augment.apply(torch::rand({3, 1, 16, 16}), params), std::invalid_argument);
  EXPECT_THROW(augment.apply(torch::rand({2, 1, 16, 20}), params), std::invalid_argument);
  EXPECT_EQ(augment(torch::rand({0, 1, 16, 16}), rng).sizes(), (std::vector<std::int64_t>{0, 1, 16, 16}));
}

TEST(AugmenterTest, CpuAndCudaGiveTheSameViewsForTheSameSeed) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device";
  AugmentConfig config = mocoV2Augment(48);
  config.maxRotationDegrees = 20;
  const Augmenter augment(config);
  const torch::Tensor images = randomImages(8, 3, 96, 80);
  std::mt19937_64 cpuRng(16), cudaRng(16);
  const torch::Tensor onCpu = augment(images, cpuRng);
  const torch::Tensor onCuda = augment(images.to(torch::kCUDA), cudaRng);
  ASSERT_TRUE(onCuda.is_cuda());
  EXPECT_LT(maxDifference(onCpu, onCuda.cpu()), 1e-4);
}

}  // namespace
}  // namespace comcl::training
