// Random views for contrastive pre-training, computed as batched tensor ops on the batch's own device.
//
// Only the per-sample parameters are random. They are drawn on the CPU from a caller-owned std::mt19937_64
// and moved to the batch's device as small tensors, so a seed gives the same views on CPU and CUDA (within
// float rounding) and the same views on every run.
//
// Order of the draws. Samples are drawn one after another (all of sample 0, then all of sample 1, ...). Each
// draw u is one generator output: its top 53 bits divided by 2^53, so u is in [0, 1) and the same under
// every standard library. For each sample:
//   1. crop, unless scale is exactly [1, 1]: up to 10 attempts of (area fraction u, log aspect ratio u); on
//      the first that fits, top u then left u. No attempt fits -> the central crop, no further draws.
//   2. flip, if flipProbability > 0: one u (flip when u < flipProbability).
//   3. rotation, if maxRotationDegrees > 0: one u for the angle.
//   4. jitter, if jitterProbability > 0: one u for the coin, then brightness u, then contrast u (the factors
//      are drawn even when the coin says no, so the count of draws does not depend on the coin).
//   5. blur, if blurProbability > 0: one u for the coin, then sigma u (always drawn, as above).
// A stage that the config switches off draws nothing, so noAugment() never touches the generator.
//
// What a view is: the crop box is resized to outputSize x outputSize, mirrored left-right when flipped, then
// rotated counter-clockwise (as seen on screen) about its centre; then brightness, then contrast, then blur.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>

namespace comcl::training {

struct AugmentConfig {
  int outputSize = 224;  // views are outputSize x outputSize
  // Random resized crop (torchvision RandomResizedCrop semantics): area fraction in [scaleMin, scaleMax] of
  // the input, aspect ratio (width / height) log-uniform in [ratioMin, ratioMax]. Boxes are continuous (not
  // rounded to whole pixels). Scale exactly [1, 1] means the whole input, whatever its aspect ratio.
  double scaleMin = 0.08, scaleMax = 1.0;
  double ratioMin = 3.0 / 4.0, ratioMax = 4.0 / 3.0;
  double flipProbability = 0.5;      // horizontal flip
  double maxRotationDegrees = 10.0;  // uniform in [-max, max]; 0 disables; at most 180
  double brightness = 0.4;           // factor uniform in [1-b, 1+b] multiplies the image; b in [0, 1]
  double contrast = 0.4;             // factor uniform in [1-c, 1+c] around the per-image mean; c in [0, 1]
  double jitterProbability = 0.8;    // brightness and contrast applied together with this probability
  double blurProbability = 0.5;      // Gaussian blur, sigma uniform in [blurSigmaMin, blurSigmaMax] (output
  double blurSigmaMin = 0.1, blurSigmaMax = 2.0;  // pixels)

  // Throws std::invalid_argument naming the field for an out-of-range (or NaN) value.
  void validate() const;
  // Every field, under its own name.
  nlohmann::json toJson() const;
  // Fields missing from `json` keep their defaults. Unknown keys, wrong types and out-of-range values throw
  // std::invalid_argument naming the key.
  static AugmentConfig fromJson(const nlohmann::json& json);
};

// MoCo v2's augmentation for grey images: crop scale [0.2, 1], flip, brightness/contrast 0.4 with p 0.8,
// blur sigma [0.1, 2] with p 0.5, no rotation (grayscale, saturation and hue do nothing to grey images).
AugmentConfig mocoV2Augment(int outputSize);
// MedAug's chexpert setting plus its crop scale [0.95, 1]: flip, rotation up to 10 degrees, no jitter or
// blur (methods.md 1.3: the paper's "+ random crop scale", read as crop-only).
AugmentConfig medAugAugment(int outputSize);
// Evaluation: no randomness, the whole image resized to outputSize x outputSize.
AugmentConfig noAugment(int outputSize);

// Per-sample parameters of one batch of views, as CPU tensors with N rows.
struct ViewParams {
  int inputHeight = 0;  // the image size that the crop boxes refer to
  int inputWidth = 0;
  torch::Tensor cropBox;       // float64 [N, 4]: left, top, width, height in input pixels (edges at integers)
  torch::Tensor flip;          // bool [N]
  torch::Tensor angleDegrees;  // float64 [N], counter-clockwise on screen
  torch::Tensor brightness;    // float64 [N], 1 = unchanged
  torch::Tensor contrast;      // float64 [N], 1 = unchanged
  torch::Tensor blurSigma;     // float64 [N] in output pixels, 0 = no blur

  std::int64_t batchSize() const { return cropBox.defined() ? cropBox.size(0) : 0; }
  // The whole image, unchanged: the starting point for hand-made parameters.
  static ViewParams identity(std::int64_t batchSize, int inputHeight, int inputWidth);
};

class Augmenter {
 public:
  explicit Augmenter(AugmentConfig config);  // validates
  const AugmentConfig& config() const { return config_; }

  // images: floating-point [N, C, H, W] in [0, 1] on any device (C is usually 1 or 3). Returns views
  // [N, C, S, S] in [0, 1] with the same dtype on the same device. Throws std::invalid_argument for another
  // rank or an integer dtype.
  //
  // Crop, flip and rotation are one affine_grid + grid_sample for the whole batch (bilinear,
  // align_corners=false). Inside the image, samples clamp to the edge pixels (so noAugment is exactly a
  // bilinear resize); where the view reaches outside the image it is black, like the cache's letterbox.
  // Anti-aliasing: when every crop in the batch is at least twice the output size along an axis, the batch
  // is first average-pooled along that axis by the integer factor floor(smallest crop / S); bilinear
  // sampling then shrinks by less than 2x and does not skip pixels. (Right/bottom remainder rows that do
  // not fill a pooling window are dropped and read as black.)
  // Brightness and contrast are per-sample factors; contrast blends with the mean over the image's
  // channels and pixels; both clamp to [0, 1]. Blur is a separable Gaussian of radius ceil(3 * largest
  // sigma in the batch) with a per-sample kernel (grouped conv2d, groups = N * C, reflect padding); samples
  // without blur get the identity kernel.
  torch::Tensor operator()(const torch::Tensor& images, std::mt19937_64& rng) const;

  // The same in two steps (for tests, and for applying identical parameters twice).
  ViewParams drawParams(std::int64_t batchSize, int inputHeight, int inputWidth, std::mt19937_64& rng) const;
  // Throws std::invalid_argument when `params` were drawn for another batch size or image size.
  torch::Tensor apply(const torch::Tensor& images, const ViewParams& params) const;

 private:
  AugmentConfig config_;
};

}  // namespace comcl::training
