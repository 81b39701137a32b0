// Degradations: severity 0 is the identity, seeds reproduce, each kind moves a simple quality measure the way
// its name says as the severity grows, the fundus codes apply the kinds their bits name, and bad input throws
// naming the field.
#include "comcl/training/degrade.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/pooling.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace comcl::training {
namespace {

namespace F = torch::nn::functional;

constexpr double kPi = 3.14159265358979323846;
const std::vector<double> kSweep = {0.25, 0.5, 1.0};

// Pixel-centre coordinates in [-1, 1]: x as [1, W], y as [H, 1].
torch::Tensor unitX(std::int64_t size) {
  return ((torch::arange(size, torch::kFloat) + 0.5) * (2.0 / static_cast<double>(size)) - 1).view({1, -1});
}
torch::Tensor unitY(std::int64_t size) {
  return unitX(size).view({-1, 1});
}

// A chest-like film [1, 1, S, S] (bright = dense): dark air, a soft-tissue body, two dark lungs crossed by
// rib-like stripes, a bright spine and heart. Smooth, with fine detail for blur and resolution loss to
// remove.
torch::Tensor chestImage(std::int64_t size) {
  const torch::Tensor x = unitX(size), y = unitY(size);
  const torch::Tensor body = torch::sigmoid((1 - (x / 0.85).pow(2) - (y / 0.95).pow(2)) * 12);
  torch::Tensor film = 0.08 + 0.5 * body;
  for (double side : {-0.4, 0.4}) {
    const torch::Tensor lung = torch::exp(-((x - side) / 0.25).pow(2) - ((y + 0.05) / 0.55).pow(2));
    film = film - 0.3 * lung + 0.06 * lung * torch::cos(2 * kPi * 9 * y);
  }
  film = film + 0.35 * torch::exp(-(x / 0.09).pow(2)) * body;
  film = film + 0.2 * torch::exp(-((x + 0.12) / 0.3).pow(2) - ((y - 0.25) / 0.25).pow(2));
  return film.clamp(0, 1).view({1, 1, size, size});
}

// A fundus-like photograph [1, 3, S, S]: an orange field of view (a disc) with darker vessels and a bright
// optic disc, black around it.
torch::Tensor fundusImage(std::int64_t size) {
  const torch::Tensor x = unitX(size), y = unitY(size);
  const torch::Tensor radius2 = x * x + y * y;
  const torch::Tensor inside = radius2.lt(0.85).to(torch::kFloat);
  const torch::Tensor vessels = 0.15 * torch::exp(-(torch::sin(6 * x + 3 * y) / 0.15).pow(2));
  const torch::Tensor disc = 0.3 * torch::exp(-(((x - 0.35).pow(2) + y * y) / 0.01));
  std::vector<torch::Tensor> channels;
  for (double base : {0.75, 0.38, 0.18})
    channels.push_back(((base * (1 - 0.3 * radius2) - vessels + disc) * inside).clamp(0, 1));
  return torch::stack(channels).unsqueeze(0);
}

torch::Tensor flatImage(std::int64_t channels, std::int64_t size, double value) {
  return torch::full({1, channels, size, size}, value);
}

// Every channel as its own grey image [N * C, 1, H, W], for single-channel filters.
torch::Tensor planes(const torch::Tensor& images) {
  return images.reshape({-1, 1, images.size(2), images.size(3)});
}

double laplacianVariance(const torch::Tensor& images) {
  const torch::Tensor kernel =
      torch::tensor({0.f, 1.f, 0.f, 1.f, -4.f, 1.f, 0.f, 1.f, 0.f}).view({1, 1, 3, 3});
  return F::conv2d(planes(images), kernel).var().item<double>();
}

// Immerkaer's noise estimate (the one the plugin's quality metrics use), on [0, 1] greys.
double noiseEstimate(const torch::Tensor& images) {
  const torch::Tensor kernel =
      torch::tensor({1.f, -2.f, 1.f, -2.f, 4.f, -2.f, 1.f, -2.f, 1.f}).view({1, 1, 3, 3});
  const torch::Tensor response = F::conv2d(planes(images), kernel).abs();
  return std::sqrt(kPi / 2) / 6 * response.mean().item<double>();
}

// The central box, a quarter of the area: inside the thorax of chestImage.
torch::Tensor body(const torch::Tensor& images) {
  const std::int64_t size = images.size(2);
  return images.narrow(2, size / 4, size / 2).narrow(3, size / 4, size / 2);
}

double bodyMean(const torch::Tensor& images) {
  return body(images).mean().item<double>();
}

double burntOutFraction(const torch::Tensor& images) {
  return body(images).le(1.0 / 255).to(torch::kFloat).mean().item<double>();
}

// Energy of what a 3x3 mean removes: the highest spatial frequencies.
double highFrequencyEnergy(const torch::Tensor& images) {
  const torch::Tensor smooth =
      F::avg_pool2d(images, F::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(false));
  return (images - smooth).pow(2).mean().item<double>();
}

// Mean step across 8x8 block boundaries over the mean step inside blocks (both directions).
double blockiness(const torch::Tensor& images) {
  const torch::Tensor across =
      (images.narrow(3, 1, images.size(3) - 1) - images.narrow(3, 0, images.size(3) - 1)).abs();
  const torch::Tensor down =
      (images.narrow(2, 1, images.size(2) - 1) - images.narrow(2, 0, images.size(2) - 1)).abs();
  const torch::Tensor acrossBoundary = (torch::arange(across.size(3)) % 8).eq(7).view({1, 1, 1, -1});
  const torch::Tensor downBoundary = (torch::arange(down.size(2)) % 8).eq(7).view({1, 1, -1, 1});
  const auto meanWhere = [](const torch::Tensor& steps, const torch::Tensor& mask) {
    return steps.masked_select(mask.expand_as(steps)).mean().item<double>();
  };
  const double boundary = meanWhere(across, acrossBoundary) + meanWhere(down, downBoundary);
  const double inside =
      meanWhere(across, acrossBoundary.logical_not()) + meanWhere(down, downBoundary.logical_not());
  return boundary / inside;
}

// Power of the column-mean profile (vertical lines) or row-mean profile at one spatial period.
double energyAtPeriod(const torch::Tensor& images, double periodPixels, bool vertical) {
  torch::Tensor profile = vertical ? images.mean({0, 1, 2}) : images.mean({0, 1, 3});
  profile = (profile - profile.mean()).to(torch::kDouble);
  const torch::Tensor phase =
      (torch::arange(profile.size(0), torch::kDouble) + 0.5) * (2 * kPi / periodPixels);
  const double cosine = (profile * torch::cos(phase)).sum().item<double>();
  const double sine = (profile * torch::sin(phase)).sum().item<double>();
  return cosine * cosine + sine * sine;
}

// Spread of the 8x8 block means: slow variation across the image.
double lowFrequencyVariation(const torch::Tensor& images) {
  return F::avg_pool2d(images, F::AvgPool2dFuncOptions(8)).std().item<double>();
}

// measure(kind at severity s) for s = 0 and the sweep, all from one seed (so the same random shape).
std::vector<double> sweep(DegradationKind kind, const torch::Tensor& images,
                          double (*measure)(const torch::Tensor&)) {
  const Degrader degrade(radiographDegradation());
  std::vector<double> values = {measure(images)};
  for (double severity : kSweep) {
    std::mt19937_64 rng(11);
    values.push_back(measure(degrade.applyKind(images, kind, severity, rng)));
  }
  return values;
}

void expectIncreasing(const std::vector<double>& values, const std::string& what) {
  for (std::size_t i = 1; i < values.size(); ++i)
    EXPECT_GT(values[i], values[i - 1]) << what << " at sweep step " << i;
}

void expectDecreasing(const std::vector<double>& values, const std::string& what) {
  for (std::size_t i = 1; i < values.size(); ++i)
    EXPECT_LT(values[i], values[i - 1]) << what << " at sweep step " << i;
}

DegradeParams oneStep(DegradationKind kind, double severity, DegradationShape shape, int height, int width) {
  DegradeParams params;
  params.imageHeight = height;
  params.imageWidth = width;
  params.steps.push_back({kind, severity, std::move(shape)});
  return params;
}

template <typename Call>
void expectInvalidNaming(Call call, const std::string& field) {
  try {
    call();
    ADD_FAILURE() << "no exception for " << field;
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
  }
}

TEST(DegradeTest, SeverityZeroLeavesEveryKindExactlyAsItWas) {
  const Degrader degrade(radiographDegradation());
  for (const torch::Tensor& images : {chestImage(40), fundusImage(40)}) {
    for (DegradationKind kind : allDegradationKinds()) {
      std::mt19937_64 rng(1);
      EXPECT_TRUE(torch::equal(degrade.applyKind(images, kind, 0.0, rng), images)) << toString(kind);
    }
  }
  DegradationConfig config = radiographDegradation();
  config.severityMin = config.severityMax = 0;
  config.minKinds = config.maxKinds = 3;
  std::mt19937_64 rng(2);
  const torch::Tensor batch = chestImage(40).repeat({4, 1, 1, 1});
  EXPECT_TRUE(torch::equal(Degrader(config)(batch, rng), batch));
}

TEST(DegradeTest, TheSameSeedGivesTheSameOutputAndOtherSeedsDiffer) {
  DegradationConfig config = radiographDegradation();
  config.minKinds = 2;
  config.maxKinds = 4;
  const Degrader radiograph(config);
  const Degrader fundus(fundusDegradation());
  const torch::Tensor films = torch::cat({chestImage(48), chestImage(48).flip(3), chestImage(48).flip(2)});
  const torch::Tensor photos = torch::cat({fundusImage(48), fundusImage(48).flip(3)});
  for (const auto& [degrade, images] : {std::pair{&radiograph, films}, std::pair{&fundus, photos}}) {
    std::mt19937_64 first(7), again(7), other(8);
    const torch::Tensor a = (*degrade)(images, first);
    EXPECT_TRUE(torch::equal(a, (*degrade)(images, again)));
    EXPECT_FALSE(torch::equal(a, (*degrade)(images, other)));
    std::mt19937_64 drawFirst(7), drawAgain(7);
    EXPECT_EQ(toJson(degrade->drawParams(3, 48, 48, drawFirst)),
              toJson(degrade->drawParams(3, 48, 48, drawAgain)));
  }
}

TEST(DegradeTest, BlurLowersTheLaplacianVarianceMonotonically) {
  expectDecreasing(sweep(DegradationKind::Blur, chestImage(96), laplacianVariance), "blur");
  // The paper's blur at its strongest sigma (15 at 1024 px), on a 96 px photograph.
  const Degrader degrade(fundusDegradation());
  const torch::Tensor photo = fundusImage(96);
  std::vector<double> values = {laplacianVariance(photo)};
  for (double severity : kSweep) {
    const auto params = oneStep(DegradationKind::FundusBlur, severity, FundusBlurShape{15}, 96, 96);
    values.push_back(laplacianVariance(degrade.apply(photo, {params})));
  }
  expectDecreasing(values, "fundus blur");
}

TEST(DegradeTest, NoiseRaisesTheNoiseEstimate) {
  expectIncreasing(sweep(DegradationKind::Noise, chestImage(64), noiseEstimate), "noise");
}

TEST(DegradeTest, UnderexposureLightensTheBodyAndAddsMottle) {
  const torch::Tensor film = chestImage(64);
  expectIncreasing(sweep(DegradationKind::Underexposure, film, bodyMean), "underexposure body mean");
  expectIncreasing(sweep(DegradationKind::Underexposure, film, noiseEstimate), "underexposure noise");
}

TEST(DegradeTest, OverexposureDarkensTheBodyAndBurnsOutTheLungs) {
  const torch::Tensor film = chestImage(64);
  expectDecreasing(sweep(DegradationKind::Overexposure, film, bodyMean), "overexposure body mean");
  const std::vector<double> burnt = sweep(DegradationKind::Overexposure, film, burntOutFraction);
  EXPECT_GT(burnt.back(), burnt.front());
}

TEST(DegradeTest, LowResolutionRemovesHighFrequencies) {
  const std::vector<double> energy =
      sweep(DegradationKind::LowResolution, chestImage(96), highFrequencyEnergy);
  expectDecreasing(energy, "low resolution");
}

TEST(DegradeTest, JpegBlocksRaiseTheBlockBoundaryDiscontinuity) {
  const torch::Tensor film = chestImage(96);
  const Degrader degrade(radiographDegradation());
  std::vector<double> values = {blockiness(film)};
  for (double severity : {0.5, 1.0}) {
    std::mt19937_64 rng(3);
    values.push_back(blockiness(degrade.applyKind(film, DegradationKind::JpegBlocks, severity, rng)));
  }
  expectIncreasing(values, "jpeg blockiness");
  // Sides that are not multiples of 8 keep their size.
  std::mt19937_64 rng(4);
  const torch::Tensor odd = torch::rand({2, 1, 30, 21});
  EXPECT_EQ(degrade.applyKind(odd, DegradationKind::JpegBlocks, 1.0, rng).sizes(), odd.sizes());
}

TEST(DegradeTest, GridLinesRaiseTheEnergyAtTheGridPeriodAlongTheirAxis) {
  const torch::Tensor flat = flatImage(1, 64, 0.5);
  const Degrader degrade(radiographDegradation());
  for (bool vertical : {true, false}) {
    GridShape grid;
    grid.vertical = vertical;
    grid.periodPixels = 6;
    std::vector<double> energy = {energyAtPeriod(flat, 6, vertical)};
    for (double severity : kSweep) {
      const torch::Tensor lined =
          degrade.apply(flat, {oneStep(DegradationKind::GridLines, severity, grid, 64, 64)});
      energy.push_back(energyAtPeriod(lined, 6, vertical));
      // Lines: constant along their own direction.
      EXPECT_LT((lined - flat).std(vertical ? 2 : 3).max().item<double>(), 1e-6);
    }
    expectIncreasing(energy, vertical ? "vertical grid" : "horizontal grid");
  }
  // A defective detector line changes exactly one column.
  GridShape withLine;
  withLine.defectiveLines = {DetectorLine{0.5, true}};
  const torch::Tensor plain =
      degrade.apply(flat, {oneStep(DegradationKind::GridLines, 1, GridShape{}, 64, 64)});
  const torch::Tensor lined = degrade.apply(flat, {oneStep(DegradationKind::GridLines, 1, withLine, 64, 64)});
  const torch::Tensor changedColumns = (lined - plain).abs().amax({0, 1, 2}).gt(1e-6).nonzero();
  ASSERT_EQ(changedColumns.numel(), 1);
  EXPECT_EQ(changedColumns.item<std::int64_t>(), 32);
  EXPECT_GT((lined - plain).sum().item<double>(), 0);
  // Drawn grids: energy at the recorded period rises on a film too.
  std::mt19937_64 rng(5);
  const torch::Tensor film = chestImage(64);
  const auto drawn = degrade.drawKind(DegradationKind::GridLines, 1.0, 1, 64, 64, rng);
  const auto& shape = std::get<GridShape>(drawn[0].steps[0].shape);
  EXPECT_GT(energyAtPeriod(degrade.apply(film, drawn), shape.periodPixels, shape.vertical),
            energyAtPeriod(film, shape.periodPixels, shape.vertical));
}

TEST(DegradeTest, UnevenIlluminationAddsSlowVariationToAFlatImage) {
  const std::vector<double> variation =
      sweep(DegradationKind::UnevenIllumination, flatImage(1, 64, 0.5), lowFrequencyVariation);
  EXPECT_EQ(variation.front(), 0);
  expectIncreasing(variation, "uneven illumination");
}

TEST(DegradeTest, FundusCodesApplyExactlyTheKindsTheirBitsName) {
  using K = DegradationKind;
  EXPECT_EQ(fundusCodeKinds("001"), std::vector<K>{K::FundusIllumination});
  EXPECT_EQ(fundusCodeKinds("010"), std::vector<K>{K::FundusSpots});
  EXPECT_EQ(fundusCodeKinds("100"), std::vector<K>{K::FundusBlur});
  EXPECT_EQ(fundusCodeKinds("111"), (std::vector<K>{K::FundusIllumination, K::FundusSpots, K::FundusBlur}));
  ASSERT_EQ(fundusDegradationCodes().size(), 7u);
  for (const std::string bad : {"000", "012", "1011", ""})
    expectInvalidNaming([&] { fundusCodeKinds(bad); }, "fundus code");

  const torch::Tensor photos = fundusImage(48).repeat({2, 1, 1, 1});
  for (const std::string& code : fundusDegradationCodes()) {
    DegradationConfig config = fundusDegradation();
    config.fundusCodes = {code};
    const Degrader degrade(config);
    std::mt19937_64 rng(9);
    const auto params = degrade.drawParams(2, 48, 48, rng);
    for (const DegradeParams& sample : params) {
      EXPECT_EQ(sample.fundusCode, code);
      std::vector<K> kinds;
      for (const DegradationStep& step : sample.steps) {
        kinds.push_back(step.kind);
        EXPECT_EQ(step.severity, 1.0);
      }
      EXPECT_EQ(kinds, fundusCodeKinds(code)) << code;
      EXPECT_EQ(sample.toJson()["fundusCode"], code);
    }
    EXPECT_FALSE(torch::equal(degrade.apply(photos, params), photos)) << code;
  }
  // Drawing among all seven codes reaches each of them.
  std::mt19937_64 rng(10);
  std::set<std::string> seen;
  for (const DegradeParams& sample : Degrader(fundusDegradation()).drawParams(200, 32, 32, rng))
    seen.insert(sample.fundusCode);
  EXPECT_EQ(seen.size(), 7u);
}

TEST(DegradeTest, TheHaloBrightensItsRingInItsColourAndTheHoleDarkensItsDisc) {
  const torch::Tensor photo =
      torch::stack({torch::full({64, 64}, 0.5), torch::full({64, 64}, 0.4), torch::full({64, 64}, 0.3)})
          .unsqueeze(0);
  const Degrader degrade(fundusDegradation());
  const torch::Tensor distance = torch::sqrt((torch::arange(64) + 0.5 - 32).pow(2).view({1, -1}) +
                                             (torch::arange(64) + 0.5 - 32).pow(2).view({-1, 1}));

  FundusIlluminationShape halo;
  halo.haloCentreX = halo.haloCentreY = 32;
  halo.haloInnerDiameter = 24;
  halo.haloOuterDiameter = 48;
  halo.haloEdgeSigma = 1;
  halo.haloColour = 1;  // (141, 238, 238) / 255: green and blue rise more than red
  const torch::Tensor haloed =
      degrade.apply(photo, {oneStep(DegradationKind::FundusIllumination, 1, halo, 64, 64)});
  const torch::Tensor change = haloed - photo;
  const torch::Tensor ring = distance.gt(15).logical_and(distance.lt(21));
  const auto meanChange = [&](std::int64_t channel, const torch::Tensor& where) {
    return change[0][channel].masked_select(where).mean().item<double>();
  };
  EXPECT_GT(meanChange(0, ring), 0.05);
  EXPECT_GT(meanChange(1, ring), meanChange(0, ring));
  EXPECT_LT(change[0].select(0, 0).masked_select(distance.lt(6)).abs().max().item<double>(), 1e-4);
  EXPECT_LT(change.abs().amax(1)[0].masked_select(distance.gt(30)).max().item<double>(), 1e-4);

  FundusIlluminationShape hole;
  hole.holeCentreX = 20;
  hole.holeCentreY = 30;
  hole.holeDiameter = 20;
  hole.holeEdgeSigma = 1;
  hole.holeDepthBase = 0.26;
  hole.holeDepthPerMean = 0.05;
  const auto holeStep = oneStep(DegradationKind::FundusIllumination, 1, hole, 64, 64);
  const torch::Tensor holed = degrade.apply(photo, {holeStep});
  const double fieldMean = photo.mean().item<double>();  // every pixel is inside the field of view
  const double depth = hole.holeDepthBase + hole.holeDepthPerMean * fieldMean;
  EXPECT_NEAR((photo - holed)[0][1][30][20].item<double>(), depth, 1e-3);
  EXPECT_LT((photo - holed).abs()[0][1][30][50].item<double>(), 1e-5);
  // The script leaves dark fields of view (mean at most 0.25) without a hole.
  const torch::Tensor dark = flatImage(3, 64, 0.2);
  EXPECT_TRUE(torch::allclose(degrade.apply(dark, {holeStep}), dark));
}

TEST(DegradeTest, SpotsChangeTheImageOnlyAroundTheirCentresAndEqually) {
  const torch::Tensor grey = flatImage(3, 64, 0.5);
  const Degrader degrade(fundusDegradation());
  std::mt19937_64 rng(12);
  const auto params = degrade.drawKind(DegradationKind::FundusSpots, 1.0, 1, 64, 64, rng);
  const auto& spots = std::get<SpotsShape>(params[0].steps[0].shape).spots;
  ASSERT_GE(spots.size(), 5u);
  ASSERT_LE(spots.size(), 10u);
  const torch::Tensor change = degrade.apply(grey, params) - grey;
  EXPECT_TRUE(torch::equal(change[0][0], change[0][1]));
  EXPECT_TRUE(torch::equal(change[0][0], change[0][2]));
  torch::Tensor nearSpot = torch::zeros({64, 64}, torch::kBool);
  const torch::Tensor x = (torch::arange(64) + 0.5).view({1, -1}),
                      y = (torch::arange(64) + 0.5).view({-1, 1});
  const nlohmann::json recorded = params[0].toJson()["steps"][0]["spots"];
  for (std::size_t i = 0; i < spots.size(); ++i) {
    const Spot& spot = spots[i];
    const torch::Tensor distance = torch::sqrt((x - spot.centreX).pow(2) + (y - spot.centreY).pow(2));
    nearSpot = nearSpot.logical_or(distance.lt(spot.radius / 2 + 6 * std::max(spot.edgeSigma, 0.25)));
    EXPECT_EQ(recorded[i]["discRadius"].get<double>(), spot.radius / 2);
  }
  EXPECT_LT(change[0][0].masked_select(nearSpot.logical_not()).abs().max().item<double>(), 1e-5);
  EXPECT_GT(change[0][0].abs().sum().item<double>(), 0);
}

TEST(DegradeTest, FundusKindsLeaveTheBlackBackgroundAlone) {
  const torch::Tensor photo = fundusImage(48);
  const torch::Tensor background = photo.amax(1).le(fundusDegradation().fundusBackgroundLevel);
  ASSERT_GT(background.sum().item<std::int64_t>(), 0);
  std::mt19937_64 rng(13);
  const Degrader degrade(fundusDegradation());
  for (int draw = 0; draw < 5; ++draw) {
    const torch::Tensor out = degrade(photo, rng);
    for (std::int64_t c = 0; c < 3; ++c)
      EXPECT_TRUE(
          torch::equal(out[0][c].masked_select(background[0]), photo[0][c].masked_select(background[0])));
  }
}

TEST(DegradeTest, OneAndThreeChannelImagesBothWork) {
  const torch::Tensor grey = chestImage(64);
  const torch::Tensor rgb = grey.repeat({1, 3, 1, 1});
  const Degrader degrade(radiographDegradation());
  for (DegradationKind kind : allDegradationKinds()) {
    std::mt19937_64 greyRng(14), rgbRng(14);
    const torch::Tensor fromGrey = degrade.applyKind(grey, kind, 1.0, greyRng);
    const torch::Tensor fromRgb = degrade.applyKind(rgb, kind, 1.0, rgbRng);
    EXPECT_EQ(fromRgb.sizes(), rgb.sizes()) << toString(kind);
    EXPECT_GE(fromRgb.min().item<double>(), 0) << toString(kind);
    EXPECT_LE(fromRgb.max().item<double>(), 1) << toString(kind);
    EXPECT_FALSE(torch::equal(fromGrey, grey)) << toString(kind);
    // Kinds without per-pixel noise or colour treat every channel alike.
    const bool perChannel = kind == DegradationKind::Noise || kind == DegradationKind::Underexposure ||
                            kind == DegradationKind::FundusIllumination;
    if (!perChannel) {
      for (std::int64_t c = 0; c < 3; ++c)
        EXPECT_LT((fromRgb.select(1, c) - fromGrey.select(1, 0)).abs().max().item<double>(), 1e-5)
            << toString(kind);
    }
  }
  std::mt19937_64 rng(15);
  expectInvalidNaming(
      [&] {
        degrade.applyKind(torch::rand({1, 2, 16, 16}), DegradationKind::FundusIllumination, 1, rng);
      },
      "channels");
}

TEST(DegradeTest, ComposesDistinctKindsInCanonicalOrderWithinTheSeverityRange) {
  DegradationConfig config = radiographDegradation();
  config.minKinds = config.maxKinds = 3;
  config.severityMin = 0.4;
  config.severityMax = 0.6;
  std::mt19937_64 rng(16);
  for (const DegradeParams& sample : Degrader(config).drawParams(60, 32, 32, rng)) {
    ASSERT_EQ(sample.steps.size(), 3u);
    std::set<DegradationKind> kinds;
    for (std::size_t i = 0; i < 3; ++i) {
      kinds.insert(sample.steps[i].kind);
      EXPECT_GE(sample.steps[i].severity, 0.4);
      EXPECT_LE(sample.steps[i].severity, 0.6);
      if (i > 0) {
        EXPECT_LT(sample.steps[i - 1].kind, sample.steps[i].kind);
      }
    }
    EXPECT_FALSE(kinds.count(DegradationKind::Underexposure) && kinds.count(DegradationKind::Overexposure));
  }
  // Under- and overexposure exclude each other, so only one of the two can be drawn.
  config.kinds = {DegradationKind::Underexposure, DegradationKind::Overexposure};
  config.minKinds = config.maxKinds = 2;
  for (const DegradeParams& sample : Degrader(config).drawParams(10, 32, 32, rng))
    EXPECT_EQ(sample.steps.size(), 1u);
}

TEST(DegradeTest, ShapesDoNotDependOnTheSeveritySoASweepOnlyChangesTheStrength) {
  const Degrader degrade(radiographDegradation());
  for (DegradationKind kind : allDegradationKinds()) {
    std::mt19937_64 weak(17), strong(17);
    nlohmann::json weakJson = degrade.drawKind(kind, 0.3, 2, 40, 40, weak)[0].toJson()["steps"][0];
    nlohmann::json strongJson = degrade.drawKind(kind, 0.9, 2, 40, 40, strong)[0].toJson()["steps"][0];
    EXPECT_EQ(weak(), strong()) << toString(kind) << ": the same number of draws";
    EXPECT_EQ(weakJson["kind"], toString(kind));
    EXPECT_EQ(weakJson["severity"], 0.3);
    if (kind == DegradationKind::GridLines) {
      EXPECT_EQ(weakJson["periodPixels"], strongJson["periodPixels"]);
      EXPECT_LT(weakJson["amplitude"].get<double>(), strongJson["amplitude"].get<double>());
    }
    if (kind == DegradationKind::Blur) {
      EXPECT_LT(weakJson["sigmaPixels"].get<double>(), strongJson["sigmaPixels"].get<double>());
    }
    if (kind == DegradationKind::JpegBlocks) {
      EXPECT_GT(weakJson["quality"].get<double>(), strongJson["quality"].get<double>());
    }
  }
}

TEST(DegradeTest, BatchedSamplesMatchTheSameStepsAppliedOneByOne) {
  const Degrader degrade(radiographDegradation());
  const torch::Tensor films = torch::cat({chestImage(32), chestImage(32).flip(3), chestImage(32).flip(2)});
  std::mt19937_64 rng(18);
  std::vector<DegradeParams> params = degrade.drawParams(3, 32, 32, rng);
  params[1].steps.clear();
  params[2].steps.insert(params[2].steps.begin(),
                         DegradationStep{DegradationKind::Blur, 0.7, std::monostate{}});
  const torch::Tensor batched = degrade.apply(films, params);
  EXPECT_TRUE(torch::equal(batched[1], films[1]));
  for (std::int64_t n = 0; n < 3; ++n) {
    const torch::Tensor alone = degrade.apply(films.narrow(0, n, 1), {params[static_cast<std::size_t>(n)]});
    EXPECT_LT((batched.narrow(0, n, 1) - alone).abs().max().item<double>(), 1e-6) << n;
  }
}

TEST(DegradeTest, BadInputThrowsNamingTheField) {
  const Degrader degrade(radiographDegradation());
  std::mt19937_64 rng(19);
  expectInvalidNaming([&] { degrade(torch::rand({1, 16, 16}), rng); }, "images");
  expectInvalidNaming([&] { degrade(torch::zeros({1, 1, 16, 16}, torch::kUInt8), rng); }, "images");
  torch::Tensor withNan = torch::rand({1, 1, 16, 16});
  withNan[0][0][3][3] = std::nan("");
  expectInvalidNaming([&] { degrade(withNan, rng); }, "NaN");

  const torch::Tensor images = torch::rand({2, 1, 16, 16});
  const auto params = degrade.drawKind(DegradationKind::Blur, 0.5, 2, 16, 16, rng);
  expectInvalidNaming([&] { degrade.apply(images.narrow(0, 0, 1), params); }, "params");
  expectInvalidNaming([&] { degrade.apply(torch::rand({2, 1, 16, 20}), params); }, "params[0]");
  for (double severity : {1.5, -0.1, std::nan("")}) {
    auto bad = params;
    bad[1].steps[0].severity = severity;
    expectInvalidNaming([&] { degrade.apply(images, bad); }, "params[1].steps[0].severity");
  }
  auto mismatched = params;
  mismatched[0].steps[0].shape = GridShape{};
  expectInvalidNaming([&] { degrade.apply(images, mismatched); }, "params[0].steps[0].shape");
  auto badGrid = degrade.drawKind(DegradationKind::GridLines, 0.5, 2, 16, 16, rng);
  std::get<GridShape>(badGrid[0].steps[0].shape).periodPixels = std::nan("");
  expectInvalidNaming([&] { degrade.apply(images, badGrid); }, "periodPixels");
  expectInvalidNaming([&] { drawDegradationStep(DegradationKind::Noise, 2, 16, 16, rng); }, "severity");
  expectInvalidNaming([&] { degrade.drawParams(1, 0, 16, rng); }, "image size");

  using Change = std::function<void(DegradationConfig&)>;
  const std::vector<std::pair<Change, std::string>> badConfigs = {
      {[](DegradationConfig& c) { c.severityMin = std::nan(""); }, "severityMin"},
      {[](DegradationConfig& c) { c.severityMax = 1.5; }, "severityMax"},
      {[](DegradationConfig& c) {
         c.severityMin = 0.9;
         c.severityMax = 0.5;
       },
       "severityMin"},
      {[](DegradationConfig& c) { c.maxKinds = 99; }, "maxKinds"},
      {[](DegradationConfig& c) {
         c.minKinds = 2;
         c.maxKinds = 1;
       },
       "minKinds"},
      {[](DegradationConfig& c) { c.kinds = {}; }, "kinds"},
      {[](DegradationConfig& c) {
         c.kinds = {DegradationKind::Blur, DegradationKind::Blur};
       },
       "kinds"},
      {[](DegradationConfig& c) {
         c.fundusCodes = {"110", "2"};
       },
       "fundus code"},
      {[](DegradationConfig& c) { c.fundusBackgroundLevel = -1; }, "fundusBackgroundLevel"},
  };
  for (const auto& [change, field] : badConfigs) {
    DegradationConfig config;
    change(config);
    expectInvalidNaming([&] { Degrader{config}; }, field);
  }

  expectInvalidNaming([] { DegradationConfig::fromJson({{"colour", 1}}); }, "colour");
  expectInvalidNaming([] { DegradationConfig::fromJson({{"kinds", {"blur", "smudge"}}}); }, "smudge");
  expectInvalidNaming([] { DegradationConfig::fromJson({{"minKinds", 1.5}}); }, "minKinds");
  expectInvalidNaming([] { DegradationConfig::fromJson({{"severityMax", "high"}}); }, "severityMax");
}

TEST(DegradeTest, ConfigSurvivesAJsonRoundTrip) {
  for (const DegradationConfig& config : {radiographDegradation(), fundusDegradation()}) {
    const nlohmann::json json = config.toJson();
    EXPECT_EQ(DegradationConfig::fromJson(json).toJson(), json);
  }
  const DegradationConfig partial =
      DegradationConfig::fromJson({{"kinds", {"noise", "blur"}}, {"maxKinds", 1}});
  EXPECT_EQ(partial.kinds, (std::vector<DegradationKind>{DegradationKind::Noise, DegradationKind::Blur}));
  EXPECT_EQ(partial.maxKinds, 1);
  EXPECT_EQ(partial.severityMax, radiographDegradation().severityMax);
}

TEST(DegradeTest, CpuAndCudaAgreeForTheSameSeed) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device";
  DegradationConfig radiograph = radiographDegradation();
  radiograph.kinds.erase(
      std::remove(radiograph.kinds.begin(), radiograph.kinds.end(), DegradationKind::JpegBlocks),
      radiograph.kinds.end());
  radiograph.minKinds = 2;
  radiograph.maxKinds = 4;
  const torch::Tensor films = torch::cat({chestImage(64), chestImage(64).flip(3), chestImage(64).flip(2)});
  const torch::Tensor photos = torch::cat({fundusImage(64), fundusImage(64).flip(3)});
  for (const auto& [config, images] :
       {std::pair{radiograph, films}, std::pair{fundusDegradation(), photos}}) {
    const Degrader degrade(config);
    std::mt19937_64 cpuRng(20), cudaRng(20);
    const torch::Tensor onCpu = degrade(images, cpuRng);
    const torch::Tensor onCuda = degrade(images.to(torch::kCUDA), cudaRng);
    ASSERT_TRUE(onCuda.is_cuda());
    EXPECT_LT((onCpu - onCuda.cpu()).abs().max().item<double>(), 1e-4);
  }
  // Quantisation can round a coefficient lying on a step boundary the other way: nearly every pixel agrees.
  const Degrader degrade(radiographDegradation());
  std::mt19937_64 cpuRng(21), cudaRng(21);
  const torch::Tensor onCpu = degrade.applyKind(films, DegradationKind::JpegBlocks, 1.0, cpuRng);
  const torch::Tensor onCuda =
      degrade.applyKind(films.to(torch::kCUDA), DegradationKind::JpegBlocks, 1.0, cudaRng);
  EXPECT_LT((onCpu - onCuda.cpu()).abs().gt(1e-4).to(torch::kFloat).mean().item<double>(), 0.01);
}

}  // namespace
}  // namespace comcl::training
