// Synthetic degradations as batched tensor ops. See degrade.h for the kinds, their severity mappings and the
// order of the random draws, and docs/methods/comcl.md for what follows degrade_eyeq.py.
#include "comcl/training/degrade.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <map>
#include <stdexcept>
#include <utility>

#include "image_ops.h"
#include "random_draws.h"

namespace comcl::training {

namespace F = torch::nn::functional;

namespace {

using detail::numberText;
using detail::uniform;
using detail::uniform01;
using detail::uniformInt;

const std::string kSubject = "degradation";
constexpr double kPi = 3.14159265358979323846;
constexpr double kLargest = std::numeric_limits<double>::max();
constexpr double kLowest = std::numeric_limits<double>::lowest();

// Strength at severity 1 of the radiograph kinds. The exposure and noise lines are synth.cpp's
// (imaging/src/synth.cpp: underexposed 0.42 + 0.62 x with noise 0.02 + 0.03 x, overexposed 1.6 x - 0.6,
// noise 0.045 + 0.045 x, low resolution by 4), so that severity 1 looks like the synthetic archive's
// degraded films that the quality flags were calibrated on; the rest are our choices.
constexpr double kGainFieldAmplitude = 0.3;
constexpr double kUnderexposureOffset = 0.42;
constexpr double kUnderexposureGainLoss = 0.38;
constexpr double kUnderexposureNoiseAtBlack = 0.02;
constexpr double kUnderexposureNoisePerLevel = 0.03;
constexpr double kOverexposureGainRise = 0.6;
constexpr double kGridAmplitude = 0.06;
constexpr double kDefectiveLineAmplitude = 0.15;
constexpr double kGridPeriodMin = 3, kGridPeriodMax = 10;
constexpr int kMaxDefectiveLines = 2;
constexpr double kBlurSigmaPerHeight = 0.01;
constexpr double kLowResolutionFactorRise = 3;
constexpr double kNoiseAtBlack = 0.045;
constexpr double kNoisePerLevel = 0.045;
constexpr double kJpegQualityAtZero = 95, kJpegQualityDrop = 85;

// degrade_eyeq.py works on 1024 x 1024 images; its pixel sizes are scaled by H / 1024.
constexpr double kFundusReferenceSide = 1024;
// Its halo colours (weight_r, weight_g, weight_b per index).
constexpr std::array<std::array<double, 3>, 3> kHaloColours = {{{251 / 255.0, 249 / 255.0, 246 / 255.0},
                                                                {141 / 255.0, 238 / 255.0, 238 / 255.0},
                                                                {177 / 255.0, 195 / 255.0, 147 / 255.0}}};
// The script leaves images whose field-of-view mean is at most this without a hole.
constexpr double kHoleMinimumMean = 0.25;
// torchvision's rgb_to_grayscale weights (adjust_contrast and adjust_saturation use them).
constexpr std::array<double, 3> kLuminance = {0.2989, 0.587, 0.114};
// The script blurs its halo, hole and spot masks with cv2.GaussianBlur kernels of a few to a few hundred
// pixels whose sigma is far larger than the kernel, i.e. nearly box filters; their edge is modelled as a
// Gaussian of the box's standard deviation (width / sqrt(12)). Below this an edge is sharp.
constexpr double kMinimumEdgeSigma = 0.25;
const double kBoxToSigma = 1 / std::sqrt(12.0);

// ITU-T T.81 Annex K, table K.1: luminance quantisation at quality 50.
constexpr std::array<double, 64> kJpegLuminance = {
    16, 11,  10,  16, 24, 40, 51, 61, 12,  12,  14,  19,  26, 58, 60, 55,  14,  13,  16,  24, 40, 57,
    69, 56,  14,  17, 22, 29, 51, 87, 80,  62,  18,  22,  37, 56, 68, 109, 103, 77,  24,  35, 55, 64,
    81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98,  112, 100, 103, 99};

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw std::invalid_argument(kSubject + " " + field + " " + why);
}

void requireRange(const std::string& field, double value, double low, double high) {
  detail::requireRange(kSubject, field, value, low, high);
}

void requireFinite(const std::string& field, double value) {
  requireRange(field, value, kLowest, kLargest);
}

void requireImageSize(int height, int width) {
  if (height < 1 || width < 1) {
    invalid("image size",
            "must be at least 1 x 1, not " + std::to_string(height) + " x " + std::to_string(width));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Names and codes

const std::vector<std::pair<DegradationKind, const char*>>& kindNames() {
  static const std::vector<std::pair<DegradationKind, const char*>> names = {
      {DegradationKind::UnevenIllumination, "unevenIllumination"},
      {DegradationKind::Underexposure, "underexposure"},
      {DegradationKind::Overexposure, "overexposure"},
      {DegradationKind::GridLines, "gridLines"},
      {DegradationKind::Blur, "blur"},
      {DegradationKind::LowResolution, "lowResolution"},
      {DegradationKind::Noise, "noise"},
      {DegradationKind::JpegBlocks, "jpegBlocks"},
      {DegradationKind::FundusIllumination, "fundusIllumination"},
      {DegradationKind::FundusSpots, "fundusSpots"},
      {DegradationKind::FundusBlur, "fundusBlur"},
  };
  return names;
}

bool isFundusKind(DegradationKind kind) {
  return kind == DegradationKind::FundusIllumination || kind == DegradationKind::FundusSpots ||
         kind == DegradationKind::FundusBlur;
}

// A default value of the DegradationShape alternative that goes with a kind.
DegradationShape defaultShape(DegradationKind kind) {
  switch (kind) {
    case DegradationKind::Noise:
    case DegradationKind::Underexposure:
      return NoiseShape{};
    case DegradationKind::GridLines:
      return GridShape{};
    case DegradationKind::UnevenIllumination:
      return GainFieldShape{};
    case DegradationKind::FundusIllumination:
      return FundusIlluminationShape{};
    case DegradationKind::FundusSpots:
      return SpotsShape{};
    case DegradationKind::FundusBlur:
      return FundusBlurShape{};
    default:
      return std::monostate{};
  }
}

// ---------------------------------------------------------------------------------------------------------
// Severity -> concrete parameters (used by apply and by toJson, so the log shows what was applied)

struct IntensityLine {  // x' = gain * x + offset, then noise of sigma noiseAtBlack + noisePerLevel * x'
  double gain = 1, offset = 0, noiseAtBlack = 0, noisePerLevel = 0;
};

IntensityLine intensityLine(const DegradationStep& step) {
  const double s = step.severity;
  switch (step.kind) {
    case DegradationKind::Underexposure:
      return {1 - kUnderexposureGainLoss * s, kUnderexposureOffset * s, kUnderexposureNoiseAtBlack * s,
              kUnderexposureNoisePerLevel * s};
    case DegradationKind::Overexposure:
      return {1 + kOverexposureGainRise * s, -kOverexposureGainRise * s, 0, 0};
    case DegradationKind::Noise:
      return {1, 0, kNoiseAtBlack * s, kNoisePerLevel * s};
    default:
      return {};
  }
}

double blurSigmaPixels(const DegradationStep& step, int height) {
  if (step.kind == DegradationKind::FundusBlur) {
    return step.severity * std::get<FundusBlurShape>(step.shape).sigmaAt1024 * height / kFundusReferenceSide;
  }
  return step.severity * kBlurSigmaPerHeight * height;
}

double lowResolutionFactor(double severity) {
  return 1 + kLowResolutionFactorRise * severity;
}

double jpegQuality(double severity) {
  return kJpegQualityAtZero - kJpegQualityDrop * severity;
}

// The script's spot value for a spot of `radius` pixels (its formula is in pixels of a 1024-high image):
// k (1 - exp(-beta d)). k turns negative past radius 39 at 1024, so large spots come out dark.
double spotAmplitude(double radius, int height) {
  const double r = radius * kFundusReferenceSide / height / 25;
  const double k = 14.0 / 25 + 1 - r;
  const double beta = 0.5 + r;
  const double d = 0.3 * r;
  return k * (1 - std::exp(-beta * d));
}

// The halo colour for `channels` (the luminance of the script's RGB colour for grey images).
std::vector<double> haloColour(int index, std::int64_t channels) {
  const auto& rgb = kHaloColours.at(static_cast<std::size_t>(index));
  if (channels == 3)
    return {rgb[0], rgb[1], rgb[2]};
  return {kLuminance[0] * rgb[0] + kLuminance[1] * rgb[1] + kLuminance[2] * rgb[2]};
}

// ---------------------------------------------------------------------------------------------------------
// Drawing shapes

GridShape drawGrid(std::mt19937_64& rng) {
  GridShape grid;
  grid.vertical = uniform01(rng) < 0.5;
  grid.periodPixels = uniform(rng, kGridPeriodMin, kGridPeriodMax);
  grid.phaseRadians = uniform(rng, 0, 2 * kPi);
  const auto lines = uniformInt(rng, 0, kMaxDefectiveLines);
  for (std::int64_t i = 0; i < lines; ++i) {
    DetectorLine line;
    line.position = uniform01(rng);
    line.bright = uniform01(rng) < 0.5;
    grid.defectiveLines.push_back(line);
  }
  return grid;
}

FundusIlluminationShape drawFundusIllumination(int height, int width, std::mt19937_64& rng) {
  const double h = height, w = width;
  const double side = std::min(h, w);
  FundusIlluminationShape shape;
  // DE_COLOR's factors.
  shape.brightness = uniform(rng, 0.7, 1.2);
  shape.contrast = uniform(rng, 0.6, 1.4);
  shape.saturation = uniform(rng, 0.6, 1.4);
  // DE_HALO: a ring between two circles round a centre near the image centre.
  shape.haloCentreX = w / 2 + uniform(rng, -1, 1) * w / 8;
  shape.haloCentreY = h / 2 + uniform(rng, -1, 1) * h / 8;
  const double cx = shape.haloCentreX, cy = shape.haloCentreY;
  shape.haloInnerDiameter = side * uniform(rng, 0.75, 1.0);
  const double farthestCorner = std::hypot(std::max(cx, w - cx), std::max(cy, h - cy));
  shape.haloOuterDiameter = side * uniform(rng, 1.0, 2 * farthestCorner / side) +
                            std::abs(std::max(cx - w / 2, cy - h / 2) + std::max(w, h) / 2);
  const double farthestEdge = std::max({cx, w - cx, cy, h - cy});
  shape.haloEdgeSigma = std::abs(2 * farthestEdge - shape.haloInnerDiameter) * kBoxToSigma;
  // The script's colour 0 needs a brightness factor below 0.2, which DE_COLOR never draws.
  shape.haloColour = static_cast<int>(uniformInt(rng, 1, 2));
  // DE_HOLE: a dark soft disc.
  shape.holeDiameter = w * uniform(rng, 0.4, 0.7);
  shape.holeCentreX = uniform(rng, w / 4, 3 * w / 4);
  shape.holeCentreY = uniform(rng, 3 * h / 8, 5 * h / 8);
  shape.holeEdgeSigma = shape.holeDiameter * uniform(rng, 0.55, 0.75) * kBoxToSigma;
  shape.holeDepthBase = uniform(rng, 0.26, 0.262);
  shape.holeDepthPerMean = uniform(rng, 0.05, 0.06);
  return shape;
}

SpotsShape drawSpots(int height, int width, std::mt19937_64& rng) {
  const double h = height, w = width;
  SpotsShape shape;
  const auto count = uniformInt(rng, 5, 10);
  for (std::int64_t i = 0; i < count; ++i) {
    Spot spot;
    spot.radius = h * uniform(rng, 0.01, 0.05);
    spot.centreX = uniform(rng, spot.radius + 1, w - spot.radius - 1);
    spot.centreY = uniform(rng, spot.radius + 1, h - spot.radius - 1);
    // The script's blur: kernel width in [sigma / 5, sigma / 4] at 1024 with sigma = 2 (5 + 20 r / 25).
    const double radiusAt1024 = spot.radius * kFundusReferenceSide / h;
    const double scriptSigma = 2 * (5 + 20 * radiusAt1024 / 25);
    const double kernelAt1024 = uniform(rng, scriptSigma / 5, scriptSigma / 4);
    spot.edgeSigma = kernelAt1024 * h / kFundusReferenceSide * kBoxToSigma;
    shape.spots.push_back(spot);
  }
  return shape;
}

DegradationShape drawShape(DegradationKind kind, int height, int width, std::mt19937_64& rng) {
  switch (kind) {
    case DegradationKind::UnevenIllumination: {
      GainFieldShape field;
      field.gradientRadians = uniform(rng, 0, 2 * kPi);
      field.curvature = uniform(rng, -1, 1);
      return field;
    }
    case DegradationKind::Underexposure:
    case DegradationKind::Noise:
      return NoiseShape{rng()};
    case DegradationKind::GridLines:
      return drawGrid(rng);
    case DegradationKind::FundusIllumination:
      return drawFundusIllumination(height, width, rng);
    case DegradationKind::FundusSpots:
      return drawSpots(height, width, rng);
    case DegradationKind::FundusBlur:
      return FundusBlurShape{uniform(rng, 5, 15)};
    default:
      return std::monostate{};
  }
}

// ---------------------------------------------------------------------------------------------------------
// Checking hand-made parameters

struct ShapeChecker {
  std::string field;
  void operator()(const std::monostate&) const {}
  void operator()(const NoiseShape&) const {}
  void operator()(const GridShape& grid) const {
    requireRange(field + ".periodPixels", grid.periodPixels, 2, kLargest);
    requireFinite(field + ".phaseRadians", grid.phaseRadians);
    if (grid.defectiveLines.size() > static_cast<std::size_t>(kMaxDefectiveLines))
      invalid(field + ".defectiveLines", "may hold at most " + std::to_string(kMaxDefectiveLines) + " lines");
    for (std::size_t i = 0; i < grid.defectiveLines.size(); ++i)
      requireRange(field + ".defectiveLines[" + std::to_string(i) + "].position",
                   grid.defectiveLines[i].position, 0, 1);
  }
  void operator()(const GainFieldShape& gain) const {
    requireFinite(field + ".gradientRadians", gain.gradientRadians);
    requireRange(field + ".curvature", gain.curvature, -1, 1);
  }
  void operator()(const FundusIlluminationShape& s) const {
    using Named = std::pair<const char*, double>;
    const std::initializer_list<Named> nonNegative = {{".brightness", s.brightness},
                                                      {".contrast", s.contrast},
                                                      {".saturation", s.saturation},
                                                      {".haloInnerDiameter", s.haloInnerDiameter},
                                                      {".haloOuterDiameter", s.haloOuterDiameter},
                                                      {".haloEdgeSigma", s.haloEdgeSigma},
                                                      {".holeDiameter", s.holeDiameter},
                                                      {".holeEdgeSigma", s.holeEdgeSigma}};
    for (const auto& [name, value] : nonNegative)
      requireRange(field + name, value, 0, kLargest);
    const std::initializer_list<Named> finite = {
        {".haloCentreX", s.haloCentreX},     {".haloCentreY", s.haloCentreY},
        {".holeCentreX", s.holeCentreX},     {".holeCentreY", s.holeCentreY},
        {".holeDepthBase", s.holeDepthBase}, {".holeDepthPerMean", s.holeDepthPerMean}};
    for (const auto& [name, value] : finite)
      requireFinite(field + name, value);
    requireRange(field + ".haloColour", s.haloColour, 0, static_cast<double>(kHaloColours.size() - 1));
  }
  void operator()(const SpotsShape& shape) const {
    for (std::size_t i = 0; i < shape.spots.size(); ++i) {
      const std::string spot = field + ".spots[" + std::to_string(i) + "]";
      requireFinite(spot + ".centreX", shape.spots[i].centreX);
      requireFinite(spot + ".centreY", shape.spots[i].centreY);
      requireRange(spot + ".radius", shape.spots[i].radius, 0, kLargest);
      requireRange(spot + ".edgeSigma", shape.spots[i].edgeSigma, 0, kLargest);
    }
  }
  void operator()(const FundusBlurShape& blur) const {
    requireRange(field + ".sigmaAt1024", blur.sigmaAt1024, 0, kLargest);
  }
};

void checkParams(const torch::Tensor& images, const std::vector<DegradeParams>& params) {
  const std::int64_t count = images.size(0);
  if (static_cast<std::int64_t>(params.size()) != count) {
    invalid("params",
            "has " + std::to_string(params.size()) + " entries for " + std::to_string(count) + " images");
  }
  for (std::size_t n = 0; n < params.size(); ++n) {
    const DegradeParams& sample = params[n];
    const std::string field = "params[" + std::to_string(n) + "]";
    if (sample.imageHeight != images.size(2) || sample.imageWidth != images.size(3)) {
      invalid(field, "were drawn for " + std::to_string(sample.imageHeight) + " x " +
                         std::to_string(sample.imageWidth) + " images, not " +
                         std::to_string(images.size(2)) + " x " + std::to_string(images.size(3)));
    }
    for (std::size_t i = 0; i < sample.steps.size(); ++i) {
      const DegradationStep& step = sample.steps[i];
      const std::string stepField = field + ".steps[" + std::to_string(i) + "]";
      requireRange(stepField + ".severity", step.severity, 0, 1);
      if (step.shape.index() != defaultShape(step.kind).index())
        invalid(stepField + ".shape", std::string("does not go with kind ") + toString(step.kind));
      std::visit(ShapeChecker{stepField + ".shape"}, step.shape);
      const std::int64_t channels = images.size(1);
      if (step.kind == DegradationKind::FundusIllumination && channels != 1 && channels != 3) {
        invalid("images channels", "must be 1 or 3 for " + std::string(toString(step.kind)) + ", not " +
                                       std::to_string(channels));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Applying one kind to a sub-batch (every step has a positive severity)

using Steps = std::vector<const DegradationStep*>;

// Per-sample values [M, K] on the device of `like`, crossing in one copy; column(k) is [M, 1, 1, 1].
class SampleTable {
 public:
  SampleTable(const std::vector<std::vector<double>>& rows, const torch::Tensor& like) {
    const auto count = static_cast<std::int64_t>(rows.size());
    const auto columns = static_cast<std::int64_t>(rows.empty() ? 0 : rows.front().size());
    torch::Tensor table = torch::empty({count, columns}, torch::kDouble);
    auto cell = table.accessor<double, 2>();
    for (std::int64_t n = 0; n < count; ++n)
      for (std::int64_t k = 0; k < columns; ++k)
        cell[n][k] = rows[static_cast<std::size_t>(n)][static_cast<std::size_t>(k)];
    table_ = table.to(like.device(), like.scalar_type());
  }
  const torch::Tensor& values() const { return table_; }
  torch::Tensor column(std::int64_t k) const { return table_.select(1, k).view({-1, 1, 1, 1}); }

 private:
  torch::Tensor table_;
};

// Pixel-centre coordinates: x as [1, 1, 1, W], y as [1, 1, H, 1].
torch::Tensor pixelX(const torch::Tensor& like) {
  return (torch::arange(like.size(3), like.options()) + 0.5).view({1, 1, 1, -1});
}
torch::Tensor pixelY(const torch::Tensor& like) {
  return (torch::arange(like.size(2), like.options()) + 0.5).view({1, 1, -1, 1});
}

// A disc whose edge is blurred radially by a Gaussian: Phi((radius - distance) / edgeSigma), [M, 1, H, W].
torch::Tensor softDisc(const torch::Tensor& like, const torch::Tensor& centreX, const torch::Tensor& centreY,
                       const torch::Tensor& radius, const torch::Tensor& edgeSigma) {
  const torch::Tensor dx = pixelX(like) - centreX;
  const torch::Tensor dy = pixelY(like) - centreY;
  const torch::Tensor distance = (dx * dx + dy * dy).sqrt_();
  // In place: these full-size temporaries hold no image data.
  return (radius - distance).div_(edgeSigma * std::sqrt(2.0)).erf_().mul_(0.5).add_(0.5);
}

double edge(double sigma) {
  return std::max(sigma, kMinimumEdgeSigma);
}

// Standard-normal fields [M, C, H, W], each from a CPU generator seeded with its step's seed (float32 on the
// CPU whatever the image dtype, so a seed gives one field everywhere), moved to the device.
torch::Tensor noiseFields(const Steps& steps, const torch::Tensor& like) {
  std::vector<torch::Tensor> fields;
  fields.reserve(steps.size());
  for (const DegradationStep* step : steps) {
    const at::Generator generator =
        at::make_generator<at::CPUGeneratorImpl>(std::get<NoiseShape>(step->shape).seed);
    fields.push_back(torch::randn({like.size(1), like.size(2), like.size(3)}, generator, torch::kFloat));
  }
  return torch::stack(fields).to(like.device(), like.scalar_type());
}

// Underexposure, Overexposure, Noise: a line on the intensities, then signal-dependent noise.
torch::Tensor applyIntensityLine(const torch::Tensor& images, const Steps& steps) {
  std::vector<std::vector<double>> rows;
  for (const DegradationStep* step : steps) {
    const IntensityLine line = intensityLine(*step);
    rows.push_back({line.gain, line.offset, line.noiseAtBlack, line.noisePerLevel});
  }
  const SampleTable table(rows, images);
  const torch::Tensor level = images * table.column(0) + table.column(1);
  if (!std::holds_alternative<NoiseShape>(steps.front()->shape))
    return level;
  return level + (table.column(2) + table.column(3) * level) * noiseFields(steps, images);
}

torch::Tensor applyGainField(const torch::Tensor& images, const Steps& steps) {
  std::vector<std::vector<double>> rows;
  for (const DegradationStep* step : steps) {
    const auto& field = std::get<GainFieldShape>(step->shape);
    rows.push_back({kGainFieldAmplitude * step->severity, std::cos(field.gradientRadians),
                    std::sin(field.gradientRadians), field.curvature});
  }
  const SampleTable table(rows, images);
  // Coordinates in [-1, 1] across the image; the mean of X^2 + Y^2 over it is 2/3, so the curved part
  // keeps the mean gain near 1. The field separates into a column term and a row term.
  const torch::Tensor x = pixelX(images) * (2.0 / static_cast<double>(images.size(3))) - 1;
  const torch::Tensor y = pixelY(images) * (2.0 / static_cast<double>(images.size(2))) - 1;
  const torch::Tensor amplitude = table.column(0);
  const torch::Tensor bend = amplitude * table.column(3);
  const torch::Tensor alongX = amplitude * table.column(1) * x - bend * (x * x - 1.0 / 3.0);
  const torch::Tensor alongY = 1 + amplitude * table.column(2) * y - bend * (y * y - 1.0 / 3.0);
  return images * (alongX + alongY).clamp_min_(0);
}

torch::Tensor applyGrid(const torch::Tensor& images, const Steps& steps) {
  std::vector<std::vector<double>> rows;
  for (const DegradationStep* step : steps) {
    const auto& grid = std::get<GridShape>(step->shape);
    const double acrossLines = static_cast<double>(grid.vertical ? images.size(3) : images.size(2));
    std::vector<double> row = {grid.vertical ? 1.0 : 0.0, kGridAmplitude * step->severity,
                               2 * kPi / grid.periodPixels, grid.phaseRadians};
    for (int line = 0; line < kMaxDefectiveLines; ++line) {
      const bool present = static_cast<std::size_t>(line) < grid.defectiveLines.size();
      const DetectorLine detector =
          present ? grid.defectiveLines[static_cast<std::size_t>(line)] : DetectorLine{};
      const double index = std::min(std::floor(detector.position * acrossLines), acrossLines - 1);
      const double sign = detector.bright ? 1.0 : -1.0;
      row.push_back(index);
      row.push_back(present ? sign * kDefectiveLineAmplitude * step->severity : 0.0);
    }
    rows.push_back(row);
  }
  const SampleTable table(rows, images);
  const torch::Tensor vertical = table.column(0);
  const torch::Tensor x = pixelX(images), y = pixelY(images);
  const auto profile = [&](const torch::Tensor& coordinate) {
    torch::Tensor wave = table.column(1) * torch::cos(coordinate * table.column(2) + table.column(3));
    for (int line = 0; line < kMaxDefectiveLines; ++line) {
      const torch::Tensor onLine = (coordinate - 0.5).eq(table.column(4 + 2 * line)).to(images.scalar_type());
      wave = wave + table.column(5 + 2 * line) * onLine;
    }
    return wave;
  };
  return images + vertical * profile(x) + (1 - vertical) * profile(y);
}

torch::Tensor applyBlur(const torch::Tensor& images, const Steps& steps) {
  std::vector<double> sigmas;
  for (const DegradationStep* step : steps)
    sigmas.push_back(blurSigmaPixels(*step, static_cast<int>(images.size(2))));
  return detail::gaussianBlur(images, torch::tensor(sigmas, torch::kDouble));
}

// Area down-sampling then bilinear up-sampling, batched over samples that share the small size.
torch::Tensor applyLowResolution(const torch::Tensor& images, const Steps& steps) {
  const std::int64_t height = images.size(2), width = images.size(3);
  std::map<std::pair<std::int64_t, std::int64_t>, std::vector<std::int64_t>> groups;
  for (std::size_t n = 0; n < steps.size(); ++n) {
    const double factor = lowResolutionFactor(steps[n]->severity);
    const auto smallHeight = std::max<std::int64_t>(1, std::llround(static_cast<double>(height) / factor));
    const auto smallWidth = std::max<std::int64_t>(1, std::llround(static_cast<double>(width) / factor));
    groups[{smallHeight, smallWidth}].push_back(static_cast<std::int64_t>(n));
  }
  torch::Tensor result = images.clone();
  for (const auto& [size, members] : groups) {
    if (size.first == height && size.second == width)
      continue;
    const torch::Tensor index = torch::tensor(members, torch::kLong).to(images.device());
    const torch::Tensor small = F::interpolate(images.index_select(0, index),
                                               F::InterpolateFuncOptions()
                                                   .size(std::vector<std::int64_t>{size.first, size.second})
                                                   .mode(torch::kArea));
    const torch::Tensor back = F::interpolate(small, F::InterpolateFuncOptions()
                                                         .size(std::vector<std::int64_t>{height, width})
                                                         .mode(torch::kBilinear)
                                                         .align_corners(false));
    result.index_copy_(0, index, back);
  }
  return result;
}

// The orthonormal 8-point DCT-II matrix (JPEG's DCT): row k is c_k cos(pi (2n + 1) k / 16).
torch::Tensor dctMatrix() {
  torch::Tensor matrix = torch::empty({8, 8}, torch::kDouble);
  auto m = matrix.accessor<double, 2>();
  for (int k = 0; k < 8; ++k)
    for (int n = 0; n < 8; ++n)
      m[k][n] = (k == 0 ? std::sqrt(1.0 / 8) : 0.5) * std::cos(kPi * (2 * n + 1) * k / 16);
  return matrix;
}

// IJG's quality scaling of the luminance table, for a quality that need not be a whole number.
std::vector<double> jpegTable(double quality) {
  const double scale = quality < 50 ? 5000 / quality : 200 - 2 * quality;
  std::vector<double> table;
  for (double base : kJpegLuminance)
    table.push_back(std::clamp(std::floor((base * scale + 50) / 100), 1.0, 255.0));
  return table;
}

// Baseline JPEG's lossy step on 8x8 blocks anchored at the top left (edge blocks padded by replication):
// level shift, DCT, quantisation with the luminance table at the step's quality, and back. Every channel is
// quantised with the luminance table, without colour conversion, chroma subsampling or 8-bit rounding.
torch::Tensor applyJpeg(const torch::Tensor& images, const Steps& steps) {
  std::vector<std::vector<double>> tables;
  for (const DegradationStep* step : steps)
    tables.push_back(jpegTable(jpegQuality(step->severity)));
  const std::int64_t count = images.size(0), channels = images.size(1);
  const std::int64_t height = images.size(2), width = images.size(3);
  const torch::Tensor quantiser = SampleTable(tables, images).values().view({count, 1, 1, 1, 8, 8});
  const torch::Tensor dct = dctMatrix().to(images.device(), images.scalar_type());
  const std::int64_t padBottom = (8 - height % 8) % 8, padRight = (8 - width % 8) % 8;
  torch::Tensor levels = images * 255 - 128;
  if (padBottom || padRight)
    levels = F::pad(levels, F::PadFuncOptions({0, padRight, 0, padBottom}).mode(torch::kReplicate));
  const std::int64_t rows = levels.size(2) / 8, columns = levels.size(3) / 8;
  // [M, C, rows, 8, columns, 8] -> [M, C, rows, columns, 8, 8]
  const torch::Tensor blocks =
      levels.reshape({count, channels, rows, 8, columns, 8}).permute({0, 1, 2, 4, 3, 5});
  const torch::Tensor coefficients = dct.matmul(blocks).matmul(dct.t());
  const torch::Tensor quantised = torch::round(coefficients / quantiser) * quantiser;
  const torch::Tensor decoded = dct.t().matmul(quantised).matmul(dct);
  const torch::Tensor image =
      decoded.permute({0, 1, 2, 4, 3, 5}).reshape({count, channels, rows * 8, columns * 8});
  return (image.narrow(2, 0, height).narrow(3, 0, width) + 128) / 255;
}

// The torchvision grey of an RGB (or grey) batch, [M, 1, H, W].
torch::Tensor luminance(const torch::Tensor& images) {
  if (images.size(1) == 1)
    return images;
  return kLuminance[0] * images.select(1, 0).unsqueeze(1) + kLuminance[1] * images.select(1, 1).unsqueeze(1) +
         kLuminance[2] * images.select(1, 2).unsqueeze(1);
}

// DE_ILLUMINATION: colour (brightness, contrast, saturation), then the halo, then the hole, each clamped.
torch::Tensor applyFundusIllumination(const torch::Tensor& images, const Steps& steps,
                                      const torch::Tensor& fieldOfView) {
  const std::int64_t channels = images.size(1);
  std::vector<std::vector<double>> rows;
  for (const DegradationStep* step : steps) {
    const auto& shape = std::get<FundusIlluminationShape>(step->shape);
    const double s = step->severity;
    std::vector<double> row = {1 + s * (shape.brightness - 1),
                               1 + s * (shape.contrast - 1),
                               1 + s * (shape.saturation - 1),
                               shape.haloCentreX,
                               shape.haloCentreY,
                               shape.haloInnerDiameter / 2,
                               shape.haloOuterDiameter / 2,
                               edge(shape.haloEdgeSigma),
                               s,
                               shape.holeCentreX,
                               shape.holeCentreY,
                               shape.holeDiameter / 2,
                               edge(shape.holeEdgeSigma),
                               s * shape.holeDepthBase,
                               s * shape.holeDepthPerMean};
    for (double weight : haloColour(shape.haloColour, channels))
      row.push_back(weight);
    rows.push_back(row);
  }
  const SampleTable table(rows, images);
  const auto c = [&](std::int64_t k) { return table.column(k); };

  torch::Tensor x = (images * c(0)).clamp(0, 1);
  x = (x * c(1) + luminance(x).mean({1, 2, 3}, /*keepdim=*/true) * (1 - c(1))).clamp(0, 1);
  if (channels == 3)
    x = (x * c(2) + luminance(x) * (1 - c(2))).clamp(0, 1);

  // The halo: the image mean, in the halo colour, on the ring between the two circles.
  const torch::Tensor ring = softDisc(x, c(3), c(4), c(6), c(7)) - softDisc(x, c(3), c(4), c(5), c(7));
  const torch::Tensor colour = table.values().narrow(1, 15, channels).view({-1, channels, 1, 1});
  x = (x + c(8) * x.mean({1, 2, 3}, /*keepdim=*/true) * colour * ring).clamp(0, 1);

  // The hole, deeper in brighter fields of view, none in dark ones.
  const torch::Tensor fieldPixels =
      fieldOfView.to(x.scalar_type()).sum({1, 2, 3}, /*keepdim=*/true).clamp_min(1);
  const torch::Tensor fieldMean =
      x.sum({1, 2, 3}, /*keepdim=*/true) / (fieldPixels * static_cast<double>(channels));
  const torch::Tensor depth =
      (c(13) + c(14) * fieldMean) * fieldMean.gt(kHoleMinimumMean).to(x.scalar_type());
  return x - depth * softDisc(x, c(9), c(10), c(11), c(12));
}

// DE_SPOT: discs of half the drawn radius, edges blurred, added to every channel.
torch::Tensor applyFundusSpots(const torch::Tensor& images, const Steps& steps) {
  std::size_t slots = 0;
  for (const DegradationStep* step : steps)
    slots = std::max(slots, std::get<SpotsShape>(step->shape).spots.size());
  std::vector<std::vector<double>> rows;
  const int height = static_cast<int>(images.size(2));
  for (const DegradationStep* step : steps) {
    const auto& spots = std::get<SpotsShape>(step->shape).spots;
    std::vector<double> row;
    for (std::size_t i = 0; i < slots; ++i) {
      const Spot spot = i < spots.size() ? spots[i] : Spot{};
      const double amplitude = i < spots.size() ? step->severity * spotAmplitude(spot.radius, height) : 0.0;
      row.insert(row.end(), {spot.centreX, spot.centreY, spot.radius / 2, edge(spot.edgeSigma), amplitude});
    }
    rows.push_back(row);
  }
  if (slots == 0)
    return images;
  const SampleTable table(rows, images);
  torch::Tensor added = torch::zeros_like(images.select(1, 0).unsqueeze(1));
  for (std::size_t i = 0; i < slots; ++i) {
    const auto k = static_cast<std::int64_t>(5 * i);
    added = added + table.column(k + 4) * softDisc(images, table.column(k), table.column(k + 1),
                                                   table.column(k + 2), table.column(k + 3));
  }
  return images + added;
}

torch::Tensor applyKindTo(DegradationKind kind, const torch::Tensor& images, const Steps& steps,
                          const torch::Tensor& fieldOfView) {
  switch (kind) {
    case DegradationKind::UnevenIllumination:
      return applyGainField(images, steps);
    case DegradationKind::Underexposure:
    case DegradationKind::Overexposure:
    case DegradationKind::Noise:
      return applyIntensityLine(images, steps);
    case DegradationKind::GridLines:
      return applyGrid(images, steps);
    case DegradationKind::Blur:
    case DegradationKind::FundusBlur:
      return applyBlur(images, steps);
    case DegradationKind::LowResolution:
      return applyLowResolution(images, steps);
    case DegradationKind::JpegBlocks:
      return applyJpeg(images, steps);
    case DegradationKind::FundusIllumination:
      return applyFundusIllumination(images, steps, fieldOfView);
    case DegradationKind::FundusSpots:
      return applyFundusSpots(images, steps);
  }
  return images;
}

// ---------------------------------------------------------------------------------------------------------
// JSON

nlohmann::json stepJson(const DegradationStep& step, int height) {
  const double s = step.severity;
  nlohmann::json json = {{"kind", toString(step.kind)}, {"severity", s}};
  switch (step.kind) {
    case DegradationKind::UnevenIllumination: {
      const auto& field = std::get<GainFieldShape>(step.shape);
      json["amplitude"] = kGainFieldAmplitude * s;
      json["gradientRadians"] = field.gradientRadians;
      json["curvature"] = field.curvature;
      break;
    }
    case DegradationKind::Underexposure:
    case DegradationKind::Overexposure:
    case DegradationKind::Noise: {
      const IntensityLine line = intensityLine(step);
      json["gain"] = line.gain;
      json["offset"] = line.offset;
      if (step.kind != DegradationKind::Overexposure) {
        json["noiseSigmaAtBlack"] = line.noiseAtBlack;
        json["noiseSigmaAtWhite"] = line.noiseAtBlack + line.noisePerLevel;
        json["noiseSeed"] = std::get<NoiseShape>(step.shape).seed;
      }
      break;
    }
    case DegradationKind::GridLines: {
      const auto& grid = std::get<GridShape>(step.shape);
      json["vertical"] = grid.vertical;
      json["periodPixels"] = grid.periodPixels;
      json["phaseRadians"] = grid.phaseRadians;
      json["amplitude"] = kGridAmplitude * s;
      json["defectiveLineAmplitude"] = kDefectiveLineAmplitude * s;
      json["defectiveLines"] = nlohmann::json::array();
      for (const DetectorLine& line : grid.defectiveLines)
        json["defectiveLines"].push_back({{"position", line.position}, {"bright", line.bright}});
      break;
    }
    case DegradationKind::Blur:
      json["sigmaPixels"] = blurSigmaPixels(step, height);
      break;
    case DegradationKind::FundusBlur:
      json["sigmaAt1024"] = std::get<FundusBlurShape>(step.shape).sigmaAt1024;
      json["sigmaPixels"] = blurSigmaPixels(step, height);
      break;
    case DegradationKind::LowResolution:
      json["factor"] = lowResolutionFactor(s);
      break;
    case DegradationKind::JpegBlocks:
      json["quality"] = jpegQuality(s);
      break;
    case DegradationKind::FundusIllumination: {
      const auto& shape = std::get<FundusIlluminationShape>(step.shape);
      json["brightness"] = 1 + s * (shape.brightness - 1);
      json["contrast"] = 1 + s * (shape.contrast - 1);
      json["saturation"] = 1 + s * (shape.saturation - 1);
      json["halo"] = {{"centreX", shape.haloCentreX},
                      {"centreY", shape.haloCentreY},
                      {"innerDiameter", shape.haloInnerDiameter},
                      {"outerDiameter", shape.haloOuterDiameter},
                      {"edgeSigma", shape.haloEdgeSigma},
                      {"colour", haloColour(shape.haloColour, 3)},
                      {"timesImageMean", s}};
      json["hole"] = {
          {"centreX", shape.holeCentreX},         {"centreY", shape.holeCentreY},
          {"diameter", shape.holeDiameter},       {"edgeSigma", shape.holeEdgeSigma},
          {"depthBase", s * shape.holeDepthBase}, {"depthPerFieldMean", s * shape.holeDepthPerMean}};
      break;
    }
    case DegradationKind::FundusSpots: {
      json["spots"] = nlohmann::json::array();
      for (const Spot& spot : std::get<SpotsShape>(step.shape).spots) {
        json["spots"].push_back({{"centreX", spot.centreX},
                                 {"centreY", spot.centreY},
                                 {"radius", spot.radius},
                                 {"discRadius", spot.radius / 2},
                                 {"edgeSigma", spot.edgeSigma},
                                 {"amplitude", s * spotAmplitude(spot.radius, height)}});
      }
      break;
    }
  }
  return json;
}

// ---------------------------------------------------------------------------------------------------------
// Config fields

const std::vector<std::pair<const char*, double DegradationConfig::*>>& numberFields() {
  static const std::vector<std::pair<const char*, double DegradationConfig::*>> fields = {
      {"severityMin", &DegradationConfig::severityMin},
      {"severityMax", &DegradationConfig::severityMax},
      {"fundusBackgroundLevel", &DegradationConfig::fundusBackgroundLevel},
  };
  return fields;
}

const std::vector<std::pair<const char*, int DegradationConfig::*>>& integerFields() {
  static const std::vector<std::pair<const char*, int DegradationConfig::*>> fields = {
      {"minKinds", &DegradationConfig::minKinds},
      {"maxKinds", &DegradationConfig::maxKinds},
  };
  return fields;
}

std::vector<std::string> stringArray(const std::string& key, const nlohmann::json& value) {
  if (!value.is_array())
    invalid(key, "must be an array of strings, not " + value.dump());
  std::vector<std::string> strings;
  for (const auto& item : value) {
    if (!item.is_string())
      invalid(key, "must be an array of strings, not " + value.dump());
    strings.push_back(item.get<std::string>());
  }
  return strings;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Names and codes

const char* toString(DegradationKind kind) {
  for (const auto& [candidate, name] : kindNames())
    if (candidate == kind)
      return name;
  return "unknown";
}

DegradationKind degradationKindFromString(const std::string& name) {
  for (const auto& [kind, candidate] : kindNames())
    if (name == candidate)
      return kind;
  invalid("kind \"" + name + "\"", "is unknown");
}

const std::vector<DegradationKind>& allDegradationKinds() {
  static const std::vector<DegradationKind> kinds = [] {
    std::vector<DegradationKind> all;
    for (const auto& entry : kindNames())
      all.push_back(entry.first);
    return all;
  }();
  return kinds;
}

const std::vector<DegradationKind>& radiographDegradationKinds() {
  static const std::vector<DegradationKind> kinds = [] {
    std::vector<DegradationKind> radiograph;
    for (DegradationKind kind : allDegradationKinds())
      if (!isFundusKind(kind))
        radiograph.push_back(kind);
    return radiograph;
  }();
  return kinds;
}

const std::vector<DegradationKind>& fundusDegradationKinds() {
  static const std::vector<DegradationKind> kinds = {
      DegradationKind::FundusIllumination, DegradationKind::FundusSpots, DegradationKind::FundusBlur};
  return kinds;
}

const std::vector<std::string>& fundusDegradationCodes() {
  static const std::vector<std::string> codes = {"001", "010", "011", "100", "101", "110", "111"};
  return codes;
}

std::vector<DegradationKind> fundusCodeKinds(const std::string& code) {
  if (code.size() != 3 || code.find_first_not_of("01") != std::string::npos || code == "000")
    invalid("fundus code \"" + code + "\"", "must be one of 001, 010, 011, 100, 101, 110, 111");
  std::vector<DegradationKind> kinds;
  // Bit 0 (the last character) is the first fundus kind.
  for (std::size_t bit = 0; bit < 3; ++bit)
    if (code[2 - bit] == '1')
      kinds.push_back(fundusDegradationKinds()[bit]);
  return kinds;
}

// ---------------------------------------------------------------------------------------------------------
// Params

nlohmann::json DegradeParams::toJson() const {
  nlohmann::json json = {{"imageHeight", imageHeight}, {"imageWidth", imageWidth}};
  if (!fundusCode.empty())
    json["fundusCode"] = fundusCode;
  json["steps"] = nlohmann::json::array();
  for (const DegradationStep& step : steps)
    json["steps"].push_back(stepJson(step, imageHeight));
  return json;
}

nlohmann::json toJson(const std::vector<DegradeParams>& batch) {
  nlohmann::json json = nlohmann::json::array();
  for (const DegradeParams& sample : batch)
    json.push_back(sample.toJson());
  return json;
}

DegradationStep drawDegradationStep(DegradationKind kind, double severity, int imageHeight, int imageWidth,
                                    std::mt19937_64& rng) {
  requireRange("severity", severity, 0, 1);
  requireImageSize(imageHeight, imageWidth);
  DegradationStep step;
  step.kind = kind;
  step.severity = severity;
  step.shape = drawShape(kind, imageHeight, imageWidth, rng);
  return step;
}

// ---------------------------------------------------------------------------------------------------------
// Config

void DegradationConfig::validate() const {
  if (fundusCodes.empty()) {
    if (kinds.empty())
      invalid("kinds", "must name at least one kind (or give fundusCodes)");
    for (std::size_t i = 0; i < kinds.size(); ++i)
      if (std::find(kinds.begin(), kinds.begin() + static_cast<std::ptrdiff_t>(i), kinds[i]) !=
          kinds.begin() + static_cast<std::ptrdiff_t>(i))
        invalid("kinds", std::string("names ") + toString(kinds[i]) + " twice");
    requireRange("minKinds", minKinds, 0, static_cast<double>(kinds.size()));
    requireRange("maxKinds", maxKinds, 0, static_cast<double>(kinds.size()));
    if (minKinds > maxKinds) {
      invalid("minKinds", "(" + std::to_string(minKinds) + ") must not exceed maxKinds (" +
                              std::to_string(maxKinds) + ")");
    }
  }
  for (const std::string& code : fundusCodes)
    fundusCodeKinds(code);
  requireRange("severityMin", severityMin, 0, 1);
  requireRange("severityMax", severityMax, 0, 1);
  if (severityMin > severityMax) {
    invalid("severityMin", "(" + numberText(severityMin) + ") must not exceed severityMax (" +
                               numberText(severityMax) + ")");
  }
  requireRange("fundusBackgroundLevel", fundusBackgroundLevel, 0, 1);
}

nlohmann::json DegradationConfig::toJson() const {
  nlohmann::json json;
  json["kinds"] = nlohmann::json::array();
  for (DegradationKind kind : kinds)
    json["kinds"].push_back(toString(kind));
  json["fundusCodes"] = fundusCodes;
  for (const auto& [name, field] : integerFields())
    json[name] = this->*field;
  for (const auto& [name, field] : numberFields())
    json[name] = this->*field;
  return json;
}

DegradationConfig DegradationConfig::fromJson(const nlohmann::json& json) {
  if (!json.is_object())
    invalid("config", "must be a JSON object, not " + json.dump());
  DegradationConfig config;
  for (const auto& item : json.items()) {
    const std::string& key = item.key();
    const nlohmann::json& value = item.value();
    if (key == "kinds") {
      config.kinds.clear();
      for (const std::string& name : stringArray(key, value))
        config.kinds.push_back(degradationKindFromString(name));
      continue;
    }
    if (key == "fundusCodes") {
      config.fundusCodes = stringArray(key, value);
      continue;
    }
    const auto integer = std::find_if(integerFields().begin(), integerFields().end(),
                                      [&](const auto& candidate) { return key == candidate.first; });
    if (integer != integerFields().end()) {
      if (!value.is_number_integer())
        invalid(key, "must be an integer, not " + value.dump());
      requireRange(key, value.get<double>(), 0, std::numeric_limits<int>::max());
      config.*(integer->second) = value.get<int>();
      continue;
    }
    const auto number = std::find_if(numberFields().begin(), numberFields().end(),
                                     [&](const auto& candidate) { return key == candidate.first; });
    if (number == numberFields().end())
      invalid("key \"" + key + "\"", "is unknown");
    if (!value.is_number())
      invalid(key, "must be a number, not " + value.dump());
    config.*(number->second) = value.get<double>();
  }
  config.validate();
  return config;
}

DegradationConfig radiographDegradation() {
  return DegradationConfig{};
}

DegradationConfig fundusDegradation() {
  DegradationConfig config;
  config.kinds = fundusDegradationKinds();
  config.minKinds = 1;
  config.maxKinds = 3;
  config.fundusCodes = fundusDegradationCodes();
  config.severityMin = 1;
  config.severityMax = 1;
  return config;
}

// ---------------------------------------------------------------------------------------------------------
// Degrader

Degrader::Degrader(DegradationConfig config) : config_(std::move(config)) {
  config_.validate();
}

torch::Tensor Degrader::operator()(const torch::Tensor& images, std::mt19937_64& rng) const {
  detail::checkImageBatch(images, kSubject);
  return apply(images, drawParams(images.size(0), detail::imageSide(images.size(2), kSubject),
                                  detail::imageSide(images.size(3), kSubject), rng));
}

std::vector<DegradeParams> Degrader::drawParams(std::int64_t batchSize, int imageHeight, int imageWidth,
                                                std::mt19937_64& rng) const {
  requireImageSize(imageHeight, imageWidth);
  const DegradationConfig& c = config_;
  std::vector<DegradeParams> batch;
  for (std::int64_t n = 0; n < batchSize; ++n) {
    DegradeParams sample;
    sample.imageHeight = imageHeight;
    sample.imageWidth = imageWidth;
    std::vector<DegradationKind> kinds;
    if (!c.fundusCodes.empty()) {
      const auto code = uniformInt(rng, 0, static_cast<std::int64_t>(c.fundusCodes.size()) - 1);
      sample.fundusCode = c.fundusCodes[static_cast<std::size_t>(code)];
      kinds = fundusCodeKinds(sample.fundusCode);
    } else {
      std::vector<DegradationKind> pool = c.kinds;
      const auto count = uniformInt(rng, c.minKinds, c.maxKinds);
      for (std::int64_t i = 0; i < count && !pool.empty(); ++i) {
        const auto pick =
            static_cast<std::size_t>(uniformInt(rng, 0, static_cast<std::int64_t>(pool.size()) - 1));
        const DegradationKind kind = pool[pick];
        pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(pick));
        kinds.push_back(kind);
        // A film is not both under- and overexposed.
        const DegradationKind opposite =
            kind == DegradationKind::Underexposure  ? DegradationKind::Overexposure
            : kind == DegradationKind::Overexposure ? DegradationKind::Underexposure
                                                    : kind;
        if (opposite != kind)
          pool.erase(std::remove(pool.begin(), pool.end(), opposite), pool.end());
      }
      std::sort(kinds.begin(), kinds.end());
    }
    for (DegradationKind kind : kinds) {
      const double severity = uniform(rng, c.severityMin, c.severityMax);
      sample.steps.push_back(drawDegradationStep(kind, severity, imageHeight, imageWidth, rng));
    }
    batch.push_back(std::move(sample));
  }
  return batch;
}

std::vector<DegradeParams> Degrader::drawKind(DegradationKind kind, double severity, std::int64_t batchSize,
                                              int imageHeight, int imageWidth, std::mt19937_64& rng) const {
  std::vector<DegradeParams> batch;
  for (std::int64_t n = 0; n < batchSize; ++n) {
    DegradeParams sample;
    sample.imageHeight = imageHeight;
    sample.imageWidth = imageWidth;
    sample.steps.push_back(drawDegradationStep(kind, severity, imageHeight, imageWidth, rng));
    batch.push_back(std::move(sample));
  }
  return batch;
}

torch::Tensor Degrader::applyKind(const torch::Tensor& images, DegradationKind kind, double severity,
                                  std::mt19937_64& rng) const {
  detail::checkImageBatch(images, kSubject);
  return apply(images, drawKind(kind, severity, images.size(0), detail::imageSide(images.size(2), kSubject),
                                detail::imageSide(images.size(3), kSubject), rng));
}

torch::Tensor Degrader::apply(const torch::Tensor& images, const std::vector<DegradeParams>& params) const {
  detail::checkImageBatch(images, kSubject);
  checkParams(images, params);
  if (images.numel() && torch::isnan(images).any().item<bool>())
    invalid("images", "contain NaN");

  const auto count = static_cast<std::int64_t>(params.size());
  std::size_t rounds = 0;
  std::vector<bool> fundusSample(params.size(), false);
  for (std::size_t n = 0; n < params.size(); ++n) {
    rounds = std::max(rounds, params[n].steps.size());
    for (const DegradationStep& step : params[n].steps)
      if (isFundusKind(step.kind) && step.severity > 0)
        fundusSample[n] = true;
  }
  const bool anyFundus = std::find(fundusSample.begin(), fundusSample.end(), true) != fundusSample.end();
  const torch::Tensor fieldOfView =
      anyFundus ? images.amax(1, /*keepdim=*/true).gt(config_.fundusBackgroundLevel) : torch::Tensor();

  // Round r applies every sample's r-th step, batched per kind.
  torch::Tensor out = images.clone();
  for (std::size_t round = 0; round < rounds; ++round) {
    for (DegradationKind kind : allDegradationKinds()) {
      std::vector<std::int64_t> members;
      Steps steps;
      for (std::size_t n = 0; n < params.size(); ++n) {
        if (round >= params[n].steps.size())
          continue;
        const DegradationStep& step = params[n].steps[round];
        if (step.kind == kind && step.severity > 0) {
          members.push_back(static_cast<std::int64_t>(n));
          steps.push_back(&step);
        }
      }
      if (members.empty())
        continue;
      if (static_cast<std::int64_t>(members.size()) == count) {
        out = applyKindTo(kind, out, steps, fieldOfView).clamp(0, 1);
        continue;
      }
      const torch::Tensor index = torch::tensor(members, torch::kLong).to(images.device());
      const torch::Tensor field = anyFundus ? fieldOfView.index_select(0, index) : torch::Tensor();
      out.index_copy_(0, index, applyKindTo(kind, out.index_select(0, index), steps, field).clamp(0, 1));
    }
  }
  if (anyFundus) {
    torch::Tensor fundus = torch::zeros({count}, torch::kBool);
    auto flag = fundus.accessor<bool, 1>();
    for (std::int64_t n = 0; n < count; ++n)
      flag[n] = fundusSample[static_cast<std::size_t>(n)];
    fundus = fundus.to(images.device()).view({-1, 1, 1, 1});
    out = torch::where(fieldOfView.logical_or(fundus.logical_not()), out, images);
  }
  return out;
}

}  // namespace comcl::training
