// Tensor helpers shared by the augmentations and the degradations. See image_ops.h.
#include "image_ops.h"

#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/upsampling.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <locale>
#include <sstream>
#include <stdexcept>

namespace comcl::training::detail {

namespace F = torch::nn::functional;

namespace {

// Normalised Gaussian taps [count, 2 * radius + 1]; a sample whose sigma is not positive gets the identity.
torch::Tensor gaussianKernels(const torch::Tensor& sigma, std::int64_t radius) {
  const std::int64_t count = sigma.size(0);
  const std::int64_t taps = 2 * radius + 1;
  torch::Tensor kernels = torch::zeros({count, taps}, torch::kDouble);
  auto kernel = kernels.accessor<double, 2>();
  const auto s = sigma.accessor<double, 1>();
  for (std::int64_t n = 0; n < count; ++n) {
    if (!(s[n] > 0)) {
      kernel[n][radius] = 1;
      continue;
    }
    double sum = 0;
    for (std::int64_t k = -radius; k <= radius; ++k) {
      const double weight = std::exp(-static_cast<double>(k * k) / (2 * s[n] * s[n]));
      kernel[n][k + radius] = weight;
      sum += weight;
    }
    for (std::int64_t k = 0; k < taps; ++k)
      kernel[n][k] /= sum;
  }
  return kernels;
}

}  // namespace

std::string numberText(double value) {
  std::ostringstream out;
  out.imbue(std::locale::classic());  // "0.5" whatever the process locale
  out << value;
  return out.str();
}

torch::Tensor resizedTo(const torch::Tensor& images, std::int64_t size) {
  if (images.size(2) == size && images.size(3) == size)
    return images;
  namespace F = torch::nn::functional;
  return F::interpolate(images, F::InterpolateFuncOptions()
                                    .size(std::vector<std::int64_t>{size, size})
                                    .mode(torch::kBilinear)
                                    .align_corners(false));
}

void requireRange(const std::string& subject, const std::string& field, double value, double low,
                  double high) {
  // `!(a <= x && x <= b)` is also true for NaN.
  if (!(low <= value && value <= high)) {
    throw std::invalid_argument(subject + " " + field + " must be in [" + numberText(low) + ", " +
                                numberText(high) + "], not " + numberText(value));
  }
}

void checkImageBatch(const torch::Tensor& images, const std::string& subject) {
  if (!images.defined() || images.dim() != 4) {
    throw std::invalid_argument(subject + " expects images of shape [N, C, H, W], not rank " +
                                std::to_string(images.defined() ? images.dim() : 0));
  }
  if (!images.is_floating_point())
    throw std::invalid_argument(subject + " expects floating-point images in [0, 1]");
  if (images.size(1) < 1 || images.size(2) < 1 || images.size(3) < 1)
    throw std::invalid_argument(subject + " expects images with at least one channel and pixel");
}

int imageSide(std::int64_t size, const std::string& subject) {
  if (size > std::numeric_limits<int>::max())
    throw std::invalid_argument(subject + ": image side " + std::to_string(size) + " is too large");
  return static_cast<int>(size);
}

torch::Tensor cpuDouble(const torch::Tensor& tensor) {
  return tensor.to(torch::kCPU, torch::kDouble).contiguous();
}

torch::Tensor perSample(const torch::Tensor& values, const torch::Tensor& like) {
  return values.to(like.device(), like.scalar_type()).view({-1, 1, 1, 1});
}

torch::Tensor gaussianBlur(const torch::Tensor& images, const torch::Tensor& sigmas) {
  const torch::Tensor sigma = cpuDouble(sigmas);
  if (!sigma.numel())
    return images;
  const double largest = sigma.max().item<double>();
  const std::int64_t height = images.size(2);
  const std::int64_t width = images.size(3);
  // Reflect padding needs the radius below the image side.
  const auto reach = static_cast<std::int64_t>(std::ceil(3 * largest));
  const std::int64_t radiusX = std::min<std::int64_t>(reach, width - 1);
  const std::int64_t radiusY = std::min<std::int64_t>(reach, height - 1);
  if (radiusX < 1 && radiusY < 1)
    return images;

  const std::int64_t count = images.size(0);
  const std::int64_t channels = images.size(1);
  // Every (sample, channel) plane is its own group. A single group is doubled: CUDA runs a grouped float
  // convolution with its own exact kernel, while one group could go to cuDNN, which may use TF32.
  const std::int64_t planes = count * channels;
  const std::int64_t groups = std::max<std::int64_t>(planes, 2);
  const auto planeWeights = [&](std::int64_t radius) {
    const std::int64_t taps = 2 * radius + 1;
    torch::Tensor weights = gaussianKernels(sigma, radius)
                                .to(images.device(), images.scalar_type())
                                .view({count, 1, taps})
                                .expand({count, channels, taps})
                                .reshape({planes, taps});
    return groups != planes ? weights.repeat({groups, 1}) : weights;
  };
  torch::Tensor x = images.reshape({1, planes, height, width});
  if (groups != planes)
    x = x.repeat({1, groups, 1, 1});
  const auto options = F::Conv2dFuncOptions().groups(groups);
  if (radiusX >= 1) {
    const torch::Tensor weights = planeWeights(radiusX);
    x = F::pad(x, F::PadFuncOptions({radiusX, radiusX, 0, 0}).mode(torch::kReflect));
    x = F::conv2d(x, weights.view({groups, 1, 1, -1}), options);
  }
  if (radiusY >= 1) {
    const torch::Tensor weights = planeWeights(radiusY);
    x = F::pad(x, F::PadFuncOptions({0, 0, radiusY, radiusY}).mode(torch::kReflect));
    x = F::conv2d(x, weights.view({groups, 1, -1, 1}), options);
  }
  return x.narrow(1, 0, planes).reshape({count, channels, height, width});
}

}  // namespace comcl::training::detail
