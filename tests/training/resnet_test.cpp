// ResNet-18/50 with torchvision's layout: the same parameter names, shapes and counts as
// torchvision.models.resnet18/resnet50, so that state dicts move between comcl and PyTorch.
#include "comcl/training/resnet.h"

#include <gtest/gtest.h>

#include <map>

#include "comcl/training/scorer.h"
#include "temp_dir.h"

namespace comcl::training {
namespace {

std::map<std::string, std::vector<std::int64_t>> shapes(torch::nn::Module& module) {
  std::map<std::string, std::vector<std::int64_t>> result;
  for (const auto& item : module.named_parameters())
    result[item.key()] = item.value().sizes().vec();
  for (const auto& item : module.named_buffers())
    result[item.key()] = item.value().sizes().vec();
  return result;
}

std::int64_t parameterCount(torch::nn::Module& module) {
  std::int64_t count = 0;
  for (const auto& p : module.parameters())
    count += p.numel();
  return count;
}

// torchvision's published sizes: resnet18 11,689,512 and resnet50 25,557,032 parameters (1000 classes).
TEST(ResNet, ParameterCountsMatchTorchvision) {
  ResNet resnet18(18, 3, 1000);
  ResNet resnet50(50, 3, 1000);
  EXPECT_EQ(parameterCount(resnet18), 11689512);
  EXPECT_EQ(parameterCount(resnet50), 25557032);
  ResNet grey(18, 1, 1000);  // one input channel: conv1 loses 64 x 2 x 7 x 7 weights
  EXPECT_EQ(parameterCount(grey), 11689512 - 64 * 2 * 7 * 7);
  EXPECT_EQ(resnet18.named_parameters().size(), 62u);
  EXPECT_EQ(resnet18.named_buffers().size(), 60u);  // 20 batch norms x (running_mean, running_var, count)
  EXPECT_EQ(resnet50.named_parameters().size(), 161u);
  EXPECT_EQ(resnet50.named_buffers().size(), 159u);
}

TEST(ResNet, TensorsHaveTorchvisionsNamesAndShapes) {
  ResNet resnet18(18, 3, 1000);
  const auto r18 = shapes(resnet18);
  const std::map<std::string, std::vector<std::int64_t>> expected18 = {
      {"conv1.weight", {64, 3, 7, 7}},
      {"bn1.running_mean", {64}},
      {"layer1.0.conv1.weight", {64, 64, 3, 3}},
      {"layer1.1.bn2.bias", {64}},
      {"layer2.0.conv1.weight", {128, 64, 3, 3}},
      {"layer2.0.downsample.0.weight", {128, 64, 1, 1}},
      {"layer2.0.downsample.1.running_var", {128}},
      {"layer4.1.bn2.num_batches_tracked", {}},
      {"fc.weight", {1000, 512}},
      {"fc.bias", {1000}}};
  for (const auto& [name, shape] : expected18) {
    ASSERT_TRUE(r18.count(name)) << name;
    EXPECT_EQ(r18.at(name), shape) << name;
  }
  EXPECT_EQ(r18.count("layer1.0.downsample.0.weight"), 0u);  // same width and stride: no shortcut conv

  ResNet resnet50(50, 1, 2);
  const auto r50 = shapes(resnet50);
  const std::map<std::string, std::vector<std::int64_t>> expected50 = {
      {"conv1.weight", {64, 1, 7, 7}},
      {"layer1.0.conv1.weight", {64, 64, 1, 1}},
      {"layer1.0.downsample.0.weight", {256, 64, 1, 1}},
      {"layer2.0.conv2.weight", {128, 128, 3, 3}},  // v1.5: the stride is on the 3x3 convolution
      {"layer3.5.bn3.weight", {1024}},
      {"layer4.2.conv3.weight", {2048, 512, 1, 1}},
      {"fc.weight", {2, 2048}}};
  for (const auto& [name, shape] : expected50) {
    ASSERT_TRUE(r50.count(name)) << name;
    EXPECT_EQ(r50.at(name), shape) << name;
  }
}

TEST(ResNet, ForwardGivesLogitsAndPooledFeatures) {
  torch::manual_seed(1);
  ResNet resnet18(18, 1, 5);
  resnet18.eval();
  const torch::Tensor images = torch::rand({2, 1, 64, 64});
  EXPECT_EQ(resnet18.features(images).sizes(), (std::vector<std::int64_t>{2, 512}));
  EXPECT_EQ(resnet18.forward(images).sizes(), (std::vector<std::int64_t>{2, 5}));
  ResNet resnet50(50, 3, 3);
  resnet50.eval();
  EXPECT_EQ(resnet50.featureDim(), 2048);
  EXPECT_EQ(resnet50.forward(torch::rand({1, 3, 32, 32})).sizes(), (std::vector<std::int64_t>{1, 3}));
}

TEST(ResNet, RefusesOtherDepthsAndChannelCounts) {
  EXPECT_THROW(ResNet(34, 1, 2), std::invalid_argument);
  EXPECT_THROW(ResNet(18, 2, 2), std::invalid_argument);
}

TEST(ResNet, IsInTheArchitectureRegistryAndScoresFromAModelDirectory) {
  const auto known = knownArchitectures();
  EXPECT_NE(std::find(known.begin(), known.end(), "resnet18"), known.end());
  EXPECT_NE(std::find(known.begin(), known.end(), "resnet50"), known.end());
  EXPECT_THROW(buildNetwork({{"name", "resnet18"}, {"params", {{"width", 3}}}}, 1, 2), ModelError);

  comcl::testing::TempDir dir;
  ModelFile model;
  model.version = 4;
  model.architecture = {{"name", "resnet18"}, {"params", nlohmann::json::object()}};
  model.inputSize = 64;
  model.findings = {"effusion", "nodule"};
  torch::manual_seed(2);
  const auto network = buildNetwork(model.architecture, 1, 2);
  const std::string path = (dir.path() / "v4").string();
  writeModelDirectory(path, model, *network);
  const auto scorer = loadScorer(path);
  const torch::Tensor images = torch::rand({3, 1, 64, 64});
  network->eval();
  torch::NoGradGuard noGrad;
  const torch::Tensor expected = torch::sigmoid(network->forward(images));
  EXPECT_TRUE(torch::allclose(scorer->score(images), expected, 1e-5, 1e-6));
}

}  // namespace
}  // namespace comcl::training
