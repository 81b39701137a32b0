#include "comcl/training/resnet.h"

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/init.h>

#include <stdexcept>
#include <string>

namespace comcl::training {

namespace {

namespace nn = torch::nn;
namespace F = torch::nn::functional;

nn::Conv2d conv(int in, int out, int kernel, int stride) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

// The shortcut when the block changes resolution or width: 1x1 convolution + batch norm, named
// downsample.0 / downsample.1 as in torchvision.
nn::Sequential shortcut(int in, int out, int stride) {
  if (stride == 1 && in == out)
    return nn::Sequential(nullptr);
  return nn::Sequential(conv(in, out, 1, stride), nn::BatchNorm2d(out));
}

class BasicBlockImpl : public nn::Module {
 public:
  static constexpr int kExpansion = 1;
  BasicBlockImpl(int in, int planes, int stride)
      : conv1(register_module("conv1", conv(in, planes, 3, stride))),
        bn1(register_module("bn1", nn::BatchNorm2d(planes))),
        conv2(register_module("conv2", conv(planes, planes, 3, 1))),
        bn2(register_module("bn2", nn::BatchNorm2d(planes))),
        downsample(shortcut(in, planes, stride)) {
    if (downsample)
      register_module("downsample", downsample);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = F::relu(bn1(conv1(x)));
    out = bn2(conv2(out));
    return F::relu(out + (downsample ? downsample->forward(x) : x));
  }
  nn::Conv2d conv1;
  nn::BatchNorm2d bn1;
  nn::Conv2d conv2;
  nn::BatchNorm2d bn2;
  nn::Sequential downsample;
};
TORCH_MODULE(BasicBlock);

class BottleneckImpl : public nn::Module {
 public:
  static constexpr int kExpansion = 4;
  BottleneckImpl(int in, int planes, int stride)
      : conv1(register_module("conv1", conv(in, planes, 1, 1))),
        bn1(register_module("bn1", nn::BatchNorm2d(planes))),
        conv2(register_module("conv2", conv(planes, planes, 3, stride))),
        bn2(register_module("bn2", nn::BatchNorm2d(planes))),
        conv3(register_module("conv3", conv(planes, planes * kExpansion, 1, 1))),
        bn3(register_module("bn3", nn::BatchNorm2d(planes * kExpansion))),
        downsample(shortcut(in, planes * kExpansion, stride)) {
    if (downsample)
      register_module("downsample", downsample);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor out = F::relu(bn1(conv1(x)));
    out = F::relu(bn2(conv2(out)));
    out = bn3(conv3(out));
    return F::relu(out + (downsample ? downsample->forward(x) : x));
  }
  nn::Conv2d conv1;
  nn::BatchNorm2d bn1;
  nn::Conv2d conv2;
  nn::BatchNorm2d bn2;
  nn::Conv2d conv3;
  nn::BatchNorm2d bn3;
  nn::Sequential downsample;
};
TORCH_MODULE(Bottleneck);

// One stage: `blocks` blocks, the first with `stride`; returns the stage and updates `in` to its width.
template <typename Block, typename Impl>
nn::Sequential stage(int& in, int planes, int blocks, int stride) {
  nn::Sequential layer;
  for (int b = 0; b < blocks; ++b) {
    layer->push_back(Block(in, planes, b == 0 ? stride : 1));
    in = planes * Impl::kExpansion;
  }
  return layer;
}

}  // namespace

ResNet::ResNet(int depth, int channels, int outputs) : depth_(depth) {
  if (depth != 18 && depth != 50)
    throw std::invalid_argument("ResNet depth must be 18 or 50, not " + std::to_string(depth));
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("ResNet input channels must be 1 or 3, not " + std::to_string(channels));
  conv1_ = register_module("conv1",
                           nn::Conv2d(nn::Conv2dOptions(channels, 64, 7).stride(2).padding(3).bias(false)));
  bn1_ = register_module("bn1", nn::BatchNorm2d(64));
  const int widths[4] = {64, 128, 256, 512};
  const int counts18[4] = {2, 2, 2, 2};
  const int counts50[4] = {3, 4, 6, 3};
  int in = 64;
  for (int s = 0; s < 4; ++s) {
    const int stride = s == 0 ? 1 : 2;
    layers_[s] = depth == 18 ? stage<BasicBlock, BasicBlockImpl>(in, widths[s], counts18[s], stride)
                             : stage<Bottleneck, BottleneckImpl>(in, widths[s], counts50[s], stride);
    register_module("layer" + std::to_string(s + 1), layers_[s]);
  }
  featureDim_ = in;
  fc_ = register_module("fc", nn::Linear(in, outputs));

  // torchvision's initialisation: He (fan-out) for convolutions, batch norms at identity.
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* c = module->as<nn::Conv2d>()) {
      nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* b = module->as<nn::BatchNorm2d>()) {
      nn::init::ones_(b->weight);
      nn::init::zeros_(b->bias);
    }
  }
}

torch::Tensor ResNet::featureMaps(torch::Tensor images) {
  torch::Tensor x = F::relu(bn1_(conv1_(images)));
  x = F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2).padding(1));
  for (auto& layer : layers_)
    x = layer->forward(x);
  return x;
}

torch::Tensor ResNet::features(torch::Tensor images) {
  return featureMaps(std::move(images)).mean({2, 3});
}

torch::Tensor ResNet::forward(torch::Tensor images) {
  return fc_(features(std::move(images)));
}

}  // namespace comcl::training
