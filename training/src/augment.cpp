// Random views as batched tensor ops. See augment.h for the geometry and the order of the random draws.
#include "comcl/training/augment.h"

#include <torch/nn/functional/pooling.h>
#include <torch/nn/functional/vision.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "image_ops.h"
#include "random_draws.h"

namespace comcl::training {

namespace F = torch::nn::functional;

namespace {

using detail::cpuDouble;
using detail::numberText;
using detail::perSample;
using detail::uniform;
using detail::uniform01;

constexpr int kCropAttempts = 10;  // torchvision's RandomResizedCrop gives up after 10 draws
constexpr double kPi = 3.14159265358979323846;

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw std::invalid_argument("augmentation " + field + " " + why);
}

void requireRange(const char* field, double value, double low, double high) {
  detail::requireRange("augmentation", field, value, low, high);
}

void requireProbability(const char* field, double value) {
  requireRange(field, value, 0.0, 1.0);
}

struct Box {
  double left, top, width, height;
};

// torchvision's fallback: the whole image, narrowed to the nearest allowed aspect ratio.
Box centralCrop(const AugmentConfig& config, double height, double width) {
  double cropWidth = width;
  double cropHeight = height;
  const double inputRatio = width / height;
  if (inputRatio < config.ratioMin)
    cropHeight = width / config.ratioMin;
  else if (inputRatio > config.ratioMax)
    cropWidth = height * config.ratioMax;
  return {(width - cropWidth) / 2, (height - cropHeight) / 2, cropWidth, cropHeight};
}

Box drawCrop(const AugmentConfig& config, double height, double width, std::mt19937_64& rng) {
  // Only the whole image has the whole area; the attempts would find it only by chance.
  if (config.scaleMin == 1.0 && config.scaleMax == 1.0)
    return {0, 0, width, height};
  const double logRatioMin = std::log(config.ratioMin);
  const double logRatioMax = std::log(config.ratioMax);
  for (int attempt = 0; attempt < kCropAttempts; ++attempt) {
    const double area = height * width * uniform(rng, config.scaleMin, config.scaleMax);
    const double ratio = std::exp(uniform(rng, logRatioMin, logRatioMax));
    const double cropWidth = std::sqrt(area * ratio);
    const double cropHeight = std::sqrt(area / ratio);
    if (cropWidth <= width && cropHeight <= height) {
      const double top = uniform(rng, 0, height - cropHeight);
      const double left = uniform(rng, 0, width - cropWidth);
      return {left, top, cropWidth, cropHeight};
    }
  }
  return centralCrop(config, height, width);
}

// The integer factor by which the whole batch can be shrunk along one axis before sampling; 1 = none.
std::int64_t poolFactor(const torch::Tensor& cropExtents, std::int64_t outputSize) {
  const double smallest = cropExtents.min().item<double>();
  const auto factor = static_cast<std::int64_t>(std::floor(smallest / static_cast<double>(outputSize)));
  return factor >= 2 ? factor : 1;
}

// Crop, flip and rotation of the whole batch in one sampling pass.
torch::Tensor resample(const torch::Tensor& images, const ViewParams& params, std::int64_t outputSize) {
  const std::int64_t count = images.size(0);
  const torch::Tensor boxes = cpuDouble(params.cropBox);
  const std::int64_t poolX = poolFactor(boxes.select(1, 2), outputSize);
  const std::int64_t poolY = poolFactor(boxes.select(1, 3), outputSize);
  torch::Tensor source = images;
  if (poolX > 1 || poolY > 1)
    source = F::avg_pool2d(images, F::AvgPool2dFuncOptions({poolY, poolX}).stride({poolY, poolX}));
  // The input pixels the (possibly pooled) source covers; normalised coordinates refer to this extent.
  const double extentX = static_cast<double>(source.size(3) * poolX);
  const double extentY = static_cast<double>(source.size(2) * poolY);

  const auto box = boxes.accessor<double, 2>();
  const torch::Tensor flips = params.flip.to(torch::kCPU, torch::kBool).contiguous();
  const auto flip = flips.accessor<bool, 1>();
  const torch::Tensor angles = cpuDouble(params.angleDegrees);
  const auto angle = angles.accessor<double, 1>();
  torch::Tensor theta = torch::empty({count, 2, 3}, torch::kDouble);
  auto t = theta.accessor<double, 3>();
  for (std::int64_t n = 0; n < count; ++n) {
    // Output point p (normalised, [-1, 1]^2) reads the input at centre + halfExtent * mirror * rotation * p;
    // the rotation matrix here is the inverse of the on-screen counter-clockwise turn (y points down).
    const double halfX = box[n][2] / extentX;
    const double halfY = box[n][3] / extentY;
    const double centreX = 2 * (box[n][0] + box[n][2] / 2) / extentX - 1;
    const double centreY = 2 * (box[n][1] + box[n][3] / 2) / extentY - 1;
    const double mirror = flip[n] ? -1.0 : 1.0;
    const double radians = angle[n] * kPi / 180.0;
    const double cosine = std::cos(radians);
    const double sine = std::sin(radians);
    t[n][0][0] = halfX * mirror * cosine;
    t[n][0][1] = -halfX * mirror * sine;
    t[n][0][2] = centreX;
    t[n][1][0] = halfY * sine;
    t[n][1][1] = halfY * cosine;
    t[n][1][2] = centreY;
  }
  const torch::Tensor grid =
      F::affine_grid(theta.to(images.device(), images.scalar_type()),
                     {count, images.size(1), outputSize, outputSize}, /*align_corners=*/false);
  // Border mode keeps the half pixel inside each image edge at the edge value (zero mode would darken it when
  // upsampling); the mask blacks out what lies outside the image.
  const torch::Tensor sampled = F::grid_sample(
      source, grid,
      F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(false));
  const torch::Tensor inside = grid.abs().le(1.0).all(3, /*keepdim=*/false).unsqueeze(1);
  return sampled * inside.to(sampled.scalar_type());
}

bool allEqual(const torch::Tensor& values, double value) {
  return !values.numel() || cpuDouble(values).eq(value).all().item<bool>();
}

torch::Tensor adjustIntensity(torch::Tensor views, const ViewParams& params) {
  if (!allEqual(params.brightness, 1.0))
    views = (views * perSample(params.brightness, views)).clamp(0.0, 1.0);
  if (!allEqual(params.contrast, 1.0)) {
    const torch::Tensor factor = perSample(params.contrast, views);
    const torch::Tensor mean = views.mean({1, 2, 3}, /*keepdim=*/true);
    // factor * x + (1 - factor) * mean leaves x exactly as it was for factor 1.
    views = (views * factor + mean * (1 - factor)).clamp(0.0, 1.0);
  }
  return views;
}

// Fields by JSON name, for toJson / fromJson.
const std::vector<std::pair<const char*, double AugmentConfig::*>>& numberFields() {
  static const std::vector<std::pair<const char*, double AugmentConfig::*>> fields = {
      {"scaleMin", &AugmentConfig::scaleMin},
      {"scaleMax", &AugmentConfig::scaleMax},
      {"ratioMin", &AugmentConfig::ratioMin},
      {"ratioMax", &AugmentConfig::ratioMax},
      {"flipProbability", &AugmentConfig::flipProbability},
      {"maxRotationDegrees", &AugmentConfig::maxRotationDegrees},
      {"brightness", &AugmentConfig::brightness},
      {"contrast", &AugmentConfig::contrast},
      {"jitterProbability", &AugmentConfig::jitterProbability},
      {"blurProbability", &AugmentConfig::blurProbability},
      {"blurSigmaMin", &AugmentConfig::blurSigmaMin},
      {"blurSigmaMax", &AugmentConfig::blurSigmaMax},
  };
  return fields;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// AugmentConfig

void AugmentConfig::validate() const {
  if (outputSize < 1 || outputSize > 16384)
    invalid("outputSize", "must be in [1, 16384], not " + std::to_string(outputSize));
  requireRange("scaleMin", scaleMin, std::numeric_limits<double>::min(), 1.0);
  requireRange("scaleMax", scaleMax, std::numeric_limits<double>::min(), 1.0);
  if (scaleMin > scaleMax)
    invalid("scaleMin",
            "(" + numberText(scaleMin) + ") must not exceed scaleMax (" + numberText(scaleMax) + ")");
  requireRange("ratioMin", ratioMin, std::numeric_limits<double>::min(), std::numeric_limits<double>::max());
  requireRange("ratioMax", ratioMax, std::numeric_limits<double>::min(), std::numeric_limits<double>::max());
  if (ratioMin > ratioMax)
    invalid("ratioMin",
            "(" + numberText(ratioMin) + ") must not exceed ratioMax (" + numberText(ratioMax) + ")");
  requireProbability("flipProbability", flipProbability);
  requireRange("maxRotationDegrees", maxRotationDegrees, 0.0, 180.0);
  requireRange("brightness", brightness, 0.0, 1.0);
  requireRange("contrast", contrast, 0.0, 1.0);
  requireProbability("jitterProbability", jitterProbability);
  requireProbability("blurProbability", blurProbability);
  requireRange("blurSigmaMin", blurSigmaMin, 0.0, std::numeric_limits<double>::max());
  requireRange("blurSigmaMax", blurSigmaMax, 0.0, std::numeric_limits<double>::max());
  if (blurSigmaMin > blurSigmaMax) {
    invalid("blurSigmaMin", "(" + numberText(blurSigmaMin) + ") must not exceed blurSigmaMax (" +
                                numberText(blurSigmaMax) + ")");
  }
}

nlohmann::json AugmentConfig::toJson() const {
  nlohmann::json json = {{"outputSize", outputSize}};
  for (const auto& [name, field] : numberFields())
    json[name] = this->*field;
  return json;
}

AugmentConfig AugmentConfig::fromJson(const nlohmann::json& json) {
  if (!json.is_object())
    invalid("config", "must be a JSON object, not " + json.dump());
  AugmentConfig config;
  const auto& fields = numberFields();
  for (const auto& item : json.items()) {
    const std::string& key = item.key();
    const nlohmann::json& value = item.value();
    if (key == "outputSize") {
      if (!value.is_number_integer())
        invalid(key, "must be an integer, not " + value.dump());
      const auto size = value.get<std::int64_t>();
      if (size < 1 || size > 16384)
        invalid(key, "must be in [1, 16384], not " + std::to_string(size));
      config.outputSize = static_cast<int>(size);
      continue;
    }
    const auto field = std::find_if(fields.begin(), fields.end(),
                                    [&](const auto& candidate) { return key == candidate.first; });
    if (field == fields.end())
      invalid("key \"" + key + "\"", "is unknown");
    if (!value.is_number())
      invalid(key, "must be a number, not " + value.dump());
    config.*(field->second) = value.get<double>();
  }
  config.validate();
  return config;
}

AugmentConfig mocoV2Augment(int outputSize) {
  AugmentConfig config;
  config.outputSize = outputSize;
  config.scaleMin = 0.2;
  config.scaleMax = 1.0;
  config.flipProbability = 0.5;
  config.maxRotationDegrees = 0;
  config.brightness = 0.4;
  config.contrast = 0.4;
  config.jitterProbability = 0.8;
  config.blurProbability = 0.5;
  config.blurSigmaMin = 0.1;
  config.blurSigmaMax = 2.0;
  return config;
}

AugmentConfig medAugAugment(int outputSize) {
  AugmentConfig config;
  config.outputSize = outputSize;
  config.scaleMin = 0.95;
  config.scaleMax = 1.0;
  config.flipProbability = 0.5;
  config.maxRotationDegrees = 10;
  config.brightness = 0;
  config.contrast = 0;
  config.jitterProbability = 0;
  config.blurProbability = 0;
  return config;
}

AugmentConfig noAugment(int outputSize) {
  AugmentConfig config = medAugAugment(outputSize);
  config.scaleMin = 1.0;
  config.flipProbability = 0;
  config.maxRotationDegrees = 0;
  return config;
}

// ---------------------------------------------------------------------------------------------------------
// ViewParams

ViewParams ViewParams::identity(std::int64_t batchSize, int inputHeight, int inputWidth) {
  if (batchSize < 0 || inputHeight < 1 || inputWidth < 1) {
    throw std::invalid_argument("view parameters need a batch size >= 0 and an image size >= 1, not " +
                                std::to_string(batchSize) + " x " + std::to_string(inputHeight) + " x " +
                                std::to_string(inputWidth));
  }
  ViewParams params;
  params.inputHeight = inputHeight;
  params.inputWidth = inputWidth;
  params.cropBox = torch::zeros({batchSize, 4}, torch::kDouble);
  params.cropBox.select(1, 2).fill_(inputWidth);
  params.cropBox.select(1, 3).fill_(inputHeight);
  params.flip = torch::zeros({batchSize}, torch::kBool);
  params.angleDegrees = torch::zeros({batchSize}, torch::kDouble);
  params.brightness = torch::ones({batchSize}, torch::kDouble);
  params.contrast = torch::ones({batchSize}, torch::kDouble);
  params.blurSigma = torch::zeros({batchSize}, torch::kDouble);
  return params;
}

// ---------------------------------------------------------------------------------------------------------
// Augmenter

Augmenter::Augmenter(AugmentConfig config) : config_(std::move(config)) {
  config_.validate();
}

torch::Tensor Augmenter::operator()(const torch::Tensor& images, std::mt19937_64& rng) const {
  detail::checkImageBatch(images, "augmentation");
  return apply(images, drawParams(images.size(0), detail::imageSide(images.size(2), "augmentation"),
                                  detail::imageSide(images.size(3), "augmentation"), rng));
}

ViewParams Augmenter::drawParams(std::int64_t batchSize, int inputHeight, int inputWidth,
                                 std::mt19937_64& rng) const {
  ViewParams params = ViewParams::identity(batchSize, inputHeight, inputWidth);
  auto box = params.cropBox.accessor<double, 2>();
  auto flip = params.flip.accessor<bool, 1>();
  auto angle = params.angleDegrees.accessor<double, 1>();
  auto brightness = params.brightness.accessor<double, 1>();
  auto contrast = params.contrast.accessor<double, 1>();
  auto sigma = params.blurSigma.accessor<double, 1>();
  const AugmentConfig& c = config_;
  for (std::int64_t n = 0; n < batchSize; ++n) {
    const Box crop = drawCrop(c, inputHeight, inputWidth, rng);
    box[n][0] = crop.left;
    box[n][1] = crop.top;
    box[n][2] = crop.width;
    box[n][3] = crop.height;
    if (c.flipProbability > 0)
      flip[n] = uniform01(rng) < c.flipProbability;
    if (c.maxRotationDegrees > 0)
      angle[n] = uniform(rng, -c.maxRotationDegrees, c.maxRotationDegrees);
    if (c.jitterProbability > 0) {
      const bool jitter = uniform01(rng) < c.jitterProbability;
      const double brightnessFactor = uniform(rng, 1 - c.brightness, 1 + c.brightness);
      const double contrastFactor = uniform(rng, 1 - c.contrast, 1 + c.contrast);
      if (jitter) {
        brightness[n] = brightnessFactor;
        contrast[n] = contrastFactor;
      }
    }
    if (c.blurProbability > 0) {
      const bool blurred = uniform01(rng) < c.blurProbability;
      const double blurSigma = uniform(rng, c.blurSigmaMin, c.blurSigmaMax);
      if (blurred)
        sigma[n] = blurSigma;
    }
  }
  return params;
}

torch::Tensor Augmenter::apply(const torch::Tensor& images, const ViewParams& params) const {
  detail::checkImageBatch(images, "augmentation");
  const std::int64_t count = images.size(0);
  const std::vector<torch::Tensor> perSampleParams = {params.cropBox,    params.flip,     params.angleDegrees,
                                                      params.brightness, params.contrast, params.blurSigma};
  for (const auto& values : perSampleParams) {
    if (!values.defined() || values.size(0) != count)
      throw std::invalid_argument("view parameters were drawn for another batch size than " +
                                  std::to_string(count));
  }
  if (params.inputHeight != images.size(2) || params.inputWidth != images.size(3)) {
    throw std::invalid_argument("view parameters were drawn for " + std::to_string(params.inputHeight) +
                                " x " + std::to_string(params.inputWidth) + " images, not " +
                                std::to_string(images.size(2)) + " x " + std::to_string(images.size(3)));
  }
  const std::int64_t size = config_.outputSize;
  if (count == 0)
    return torch::empty({0, images.size(1), size, size}, images.options());
  torch::Tensor views = resample(images, params, size);
  views = adjustIntensity(views, params);
  return detail::gaussianBlur(views, params.blurSigma);
}

}  // namespace comcl::training
