// ResNet-18 and ResNet-50 with torchvision's layout and parameter names (conv1, bn1, layer1.0.conv1, ...,
// layer4.1.bn2.running_var, fc.weight), so that weights move between comcl and PyTorch users with a plain
// state dict. ResNet-50 is torchvision's "v1.5" (the stride sits on the 3x3 convolution of a bottleneck).
// The first convolution takes 1 (radiographs) or 3 channels.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "comcl/training/scorer.h"

namespace comcl::training {

class ResNet final : public ScoringNetwork {
 public:
  // depth: 18 or 50 (std::invalid_argument otherwise); channels: 1 or 3; outputs: size of the `fc` layer.
  ResNet(int depth, int channels, int outputs);

  // The last block's feature maps [N, featureDim(), H/32, W/32] (class-activation maps read them).
  torch::Tensor featureMaps(torch::Tensor images);
  // Globally pooled features [N, featureDim()] (what contrastive heads and linear probes read): the spatial
  // mean of featureMaps().
  torch::Tensor features(torch::Tensor images);
  // Logits [N, outputs] through `fc`.
  torch::Tensor forward(torch::Tensor images) override;
  int featureDim() const { return featureDim_; }
  int depth() const { return depth_; }

 private:
  int depth_;
  int featureDim_;
  torch::nn::Conv2d conv1_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr};
  torch::nn::Sequential layers_[4];
  torch::nn::Linear fc_{nullptr};
};

}  // namespace comcl::training
