// Tensor helpers shared by the augmentations and the degradations (internal to comcl_training).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>

namespace comcl::training::detail {

// `value` as an ostream prints it, for error messages.
std::string numberText(double value);

// Throws std::invalid_argument "<subject> <field> must be in [low, high], not <value>"; NaN is out of range.
void requireRange(const std::string& subject, const std::string& field, double value, double low,
                  double high);

// Throws std::invalid_argument, worded "<subject> expects images ...", unless `images` is a defined
// floating-point [N, C, H, W] tensor with at least one channel and pixel.
void checkImageBatch(const torch::Tensor& images, const std::string& subject);

// An image side as int; throws std::invalid_argument "<subject>: image side N is too large" past INT_MAX.
int imageSide(std::int64_t size, const std::string& subject);

torch::Tensor cpuDouble(const torch::Tensor& tensor);

// Per-sample values [N] as [N, 1, 1, 1] with the dtype and device of `like`, to scale whole samples.
torch::Tensor perSample(const torch::Tensor& values, const torch::Tensor& like);

// Separable Gaussian blur of images [N, C, H, W] with one sigma (pixels) per sample (`sigmas`: [N], any
// device). Radius ceil(3 * largest sigma in the batch), at most the image side - 1; a per-sample kernel
// (grouped conv2d, groups = N * C, reflect padding). Samples with sigma <= 0 get the identity kernel and come
// back exactly unchanged.
// A batch [N, C, H, W] resized bilinearly (align_corners false) to size x size; the batch itself when it
// already has that size.
torch::Tensor resizedTo(const torch::Tensor& images, std::int64_t size);

torch::Tensor gaussianBlur(const torch::Tensor& images, const torch::Tensor& sigmas);

}  // namespace comcl::training::detail
