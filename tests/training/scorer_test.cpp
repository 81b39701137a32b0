// Model directories round-trip: a network written with writeModelDirectory() scores exactly as it did in
// memory once loaded, and every broken directory is refused with a message that names the problem.
#include "comcl/training/scorer.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/serialize/output-archive.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "temp_dir.h"

namespace comcl::training {
namespace {

namespace fs = std::filesystem;

ModelFile tinyModel() {
  ModelFile m;
  m.version = 3;
  m.architecture = {{"name", "tiny-cnn"}, {"params", {{"width", 4}, {"depth", 2}}}};
  m.inputSize = 32;
  m.channels = 1;
  m.findings = {"effusion", "pneumothorax"};
  m.mean = {0.4};
  m.stddev = {0.3};
  m.createdAt = "2024-05-01T12:00:00Z";
  m.method = "supervised";
  m.metrics = {{"auc", {{"effusion", 0.81}, {"pneumothorax", 0.77}}}, {"epochs", 12}};
  return m;
}

// A freshly built network whose batch-norm statistics are not the defaults, as after training, so that a
// loader that skipped buffers or scored in training mode would give other numbers.
std::shared_ptr<ScoringNetwork> trainedNetwork(const ModelFile& m) {
  torch::manual_seed(7);
  auto network = buildNetwork(m.architecture, m.channels, static_cast<int>(m.findings.size()));
  torch::NoGradGuard noGrad;
  for (auto& item : network->named_buffers()) {
    torch::Tensor& buffer = item.value();
    if (item.key().find("running_mean") != std::string::npos)
      buffer.uniform_(-0.3, 0.3);
    else if (item.key().find("running_var") != std::string::npos)
      buffer.uniform_(0.5, 2.0);
    else
      buffer.fill_(11);
  }
  for (auto& parameter : network->parameters())
    parameter.add_(torch::randn_like(parameter).mul_(0.2));
  return network;
}

// What the scorer must give: the network's own forward pass on resized, normalised images.
torch::Tensor expectedScores(ScoringNetwork& network, const ModelFile& m, torch::Tensor images) {
  torch::NoGradGuard noGrad;
  network.eval();
  if (images.size(2) != m.inputSize || images.size(3) != m.inputSize) {
    namespace F = torch::nn::functional;
    images = F::interpolate(images, F::InterpolateFuncOptions()
                                        .size(std::vector<std::int64_t>{m.inputSize, m.inputSize})
                                        .mode(torch::kBilinear)
                                        .align_corners(false));
  }
  images = images.expand({images.size(0), m.channels, m.inputSize, m.inputSize});
  const auto options = torch::TensorOptions().dtype(torch::kFloat32);
  const torch::Tensor mean =
      torch::tensor(std::vector<float>(m.mean.begin(), m.mean.end()), options).reshape({1, -1, 1, 1});
  const torch::Tensor stddev =
      torch::tensor(std::vector<float>(m.stddev.begin(), m.stddev.end()), options).reshape({1, -1, 1, 1});
  return torch::sigmoid(network.forward((images - mean) / stddev));
}

nlohmann::json readJson(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

void writeFile(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

void editJson(const fs::path& directory, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json json = readJson(directory / "model.json");
  edit(json);
  writeFile(directory / "model.json", json.dump(2));
}

// Writes weights.pt by hand: the network's tensors, with `edit` applied to the name -> tensor list first.
void writeWeights(const fs::path& path, torch::nn::Module& network,
                  const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& item : network.named_parameters())
    tensors.emplace_back(item.key(), item.value().detach());
  for (const auto& item : network.named_buffers())
    tensors.emplace_back(item.key(), item.value());
  edit(tensors);
  torch::serialize::OutputArchive archive;
  for (const auto& [name, tensor] : tensors)
    archive.write(name, tensor);
  archive.save_to(path.string());
}

// The message of the ModelError that `action` throws ("" when it throws none).
std::string modelError(const std::function<void()>& action) {
  try {
    action();
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> entries(const fs::path& directory) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(directory))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class ScorerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = tinyModel();
    network_ = trainedNetwork(model_);
    modelDir_ = dir_.path() / "models" / "v3";
    writeModelDirectory(modelDir_.string(), model_, *network_);
  }

  comcl::testing::TempDir dir_;
  ModelFile model_;
  std::shared_ptr<ScoringNetwork> network_;
  fs::path modelDir_;
};

TEST_F(ScorerTest, ScoresEqualTheNetworksOwnForwardForBatchesOfOneAndSeven) {
  const auto scorer = loadScorer(modelDir_.string(), torch::kCPU);
  for (const std::int64_t n : {1, 7}) {
    torch::manual_seed(static_cast<std::uint64_t>(n));
    const torch::Tensor images = torch::rand({n, 1, 32, 32});
    const torch::Tensor scores = scorer->score(images);
    const torch::Tensor expected = expectedScores(*network_, model_, images);
    ASSERT_EQ(scores.sizes(), expected.sizes()) << "batch of " << n;
    EXPECT_LE((scores - expected).abs().max().item<float>(), 1e-6f) << "batch of " << n;
  }
}

TEST_F(ScorerTest, ScoresDoNotDependOnTheRestOfTheBatch) {
  const auto scorer = loadScorer(modelDir_.string(), torch::kCPU);
  torch::manual_seed(3);
  const torch::Tensor images = torch::rand({7, 1, 32, 32});
  const torch::Tensor together = scorer->score(images);
  for (std::int64_t i = 0; i < 7; ++i) {
    const torch::Tensor alone = scorer->score(images.slice(0, i, i + 1));
    EXPECT_LE((alone[0] - together[i]).abs().max().item<float>(), 1e-6f) << "image " << i;
  }
}

TEST_F(ScorerTest, ResizesImagesOfAnotherSize) {
  const auto scorer = loadScorer(modelDir_.string(), torch::kCPU);
  for (const std::int64_t size : {48, 20}) {
    torch::manual_seed(static_cast<std::uint64_t>(size));
    const torch::Tensor images = torch::rand({3, 1, size, size});
    const torch::Tensor scores = scorer->score(images);
    ASSERT_EQ(scores.sizes(), (std::vector<std::int64_t>{3, 2})) << size;
    EXPECT_LE((scores - expectedScores(*network_, model_, images)).abs().max().item<float>(), 1e-6f) << size;
  }
}

TEST_F(ScorerTest, OutputsAreProbabilitiesOfShapeNByFindingsOnTheCpu) {
  const auto scorer = loadScorer(modelDir_.string(), torch::kCPU);
  torch::manual_seed(5);
  const torch::Tensor scores = scorer->score(torch::rand({5, 1, 32, 32}));
  EXPECT_EQ(scores.sizes(), (std::vector<std::int64_t>{5, 2}));
  EXPECT_EQ(scores.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(scores.device().is_cpu());
  EXPECT_GE(scores.min().item<float>(), 0.0f);
  EXPECT_LE(scores.max().item<float>(), 1.0f);
  // Saturated inputs stay probabilities too.
  const torch::Tensor extreme =
      scorer->score(torch::cat({torch::zeros({1, 1, 32, 32}), torch::ones({1, 1, 32, 32})}));
  EXPECT_GE(extreme.min().item<float>(), 0.0f);
  EXPECT_LE(extreme.max().item<float>(), 1.0f);
  EXPECT_EQ(scorer->score(torch::rand({0, 1, 32, 32})).sizes(), (std::vector<std::int64_t>{0, 2}));
}

TEST_F(ScorerTest, AcceptsOtherDtypes) {
  const auto scorer = loadScorer(modelDir_.string(), torch::kCPU);
  torch::manual_seed(9);
  const torch::Tensor images = torch::rand({2, 1, 32, 32});
  EXPECT_LE((scorer->score(images.to(torch::kFloat64)) - scorer->score(images)).abs().max().item<float>(),
            1e-6f);
}

TEST_F(ScorerTest, RefusesImagesOfTheWrongRankOrChannelCountAndTakesColourAsLuminance) {
  const auto scorer = loadScorer(modelDir_.string(), torch::kCPU);
  EXPECT_THROW(scorer->score(torch::rand({1, 32, 32})), std::invalid_argument);
  EXPECT_THROW(scorer->score(torch::rand({1, 2, 32, 32})), std::invalid_argument);
  // Colour images (a colour image cache) are scored as their luminance by a grey model.
  const torch::Tensor rgb = torch::rand({2, 3, 32, 32});
  const torch::Tensor luminance =
      (rgb * torch::tensor({0.299f, 0.587f, 0.114f}).reshape({1, 3, 1, 1})).sum(1, /*keepdim=*/true);
  EXPECT_TRUE(torch::allclose(scorer->score(rgb), scorer->score(luminance), 1e-5, 1e-6));
}

TEST_F(ScorerTest, DescriptionFindingsVersionAndModelFileRoundTrip) {
  const auto scorer = loadScorer(modelDir_.string(), torch::kCPU);
  EXPECT_EQ(scorer->modelVersion(), 3);
  EXPECT_EQ(scorer->findings(), (std::vector<std::string>{"effusion", "pneumothorax"}));
  EXPECT_EQ(scorer->inputSize(), 32);
  EXPECT_EQ(scorer->description(), "v3 tiny-cnn (2 findings) on cpu");

  const ModelFile read = readModelFile(modelDir_.string());
  EXPECT_EQ(read.version, model_.version);
  EXPECT_EQ(read.architecture, model_.architecture);
  EXPECT_EQ(read.inputSize, model_.inputSize);
  EXPECT_EQ(read.channels, model_.channels);
  EXPECT_EQ(read.findings, model_.findings);
  EXPECT_EQ(read.mean, model_.mean);
  EXPECT_EQ(read.stddev, model_.stddev);
  EXPECT_EQ(read.createdAt, model_.createdAt);
  EXPECT_EQ(read.method, model_.method);
  EXPECT_EQ(read.metrics, model_.metrics);

  const nlohmann::json json = readJson(modelDir_ / "model.json");
  EXPECT_EQ(json["format"], "comcl-model");
  EXPECT_EQ(json["formatVersion"], 1);
  EXPECT_EQ(json["normalisation"]["std"], nlohmann::json::array({0.3}));
  EXPECT_EQ(entries(modelDir_), (std::vector<std::string>{"model.json", "weights.pt"}));
}

TEST_F(ScorerTest, WeightsAreStoredUnderTheModulesOwnNames) {
  torch::serialize::InputArchive archive;
  archive.load_from((modelDir_ / "weights.pt").string());
  std::vector<std::string> keys = archive.keys();
  std::sort(keys.begin(), keys.end());
  std::vector<std::string> names;
  for (const auto& item : network_->named_parameters())
    names.push_back(item.key());
  for (const auto& item : network_->named_buffers())
    names.push_back(item.key());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(keys, names);
  EXPECT_NE(std::find(keys.begin(), keys.end(), "features.1.running_var"), keys.end());
  EXPECT_NE(std::find(keys.begin(), keys.end(), "head.weight"), keys.end());
}

TEST_F(ScorerTest, FillsInCreatedAtWhenEmpty) {
  ModelFile m = tinyModel();
  m.createdAt.clear();
  writeModelDirectory((dir_.path() / "dated").string(), m, *network_);
  const std::string createdAt = readModelFile((dir_.path() / "dated").string()).createdAt;
  ASSERT_EQ(createdAt.size(), 20u) << createdAt;
  EXPECT_EQ(createdAt[10], 'T');
  EXPECT_EQ(createdAt.back(), 'Z');
}

TEST_F(ScorerTest, ThreeChannelModelsSeeTheGreyImageRepeated) {
  ModelFile m = tinyModel();
  m.channels = 3;
  m.mean = {0.485, 0.456, 0.406};
  m.stddev = {0.229, 0.224, 0.225};
  auto network = trainedNetwork(m);
  const fs::path directory = dir_.path() / "rgb";
  writeModelDirectory(directory.string(), m, *network);
  torch::manual_seed(4);
  const torch::Tensor images = torch::rand({2, 1, 32, 32});
  const torch::Tensor scores = loadScorer(directory.string(), torch::kCPU)->score(images);
  EXPECT_LE((scores - expectedScores(*network, m, images)).abs().max().item<float>(), 1e-6f);
}

TEST_F(ScorerTest, ScoresOnCudaLikeOnTheCpu) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device";
  const auto gpu = loadScorer(modelDir_.string(), torch::Device(torch::kCUDA, 0));
  const auto cpu = loadScorer(modelDir_.string(), torch::kCPU);
  EXPECT_EQ(gpu->description(), "v3 tiny-cnn (2 findings) on cuda:0");
  torch::manual_seed(6);
  const torch::Tensor images = torch::rand({4, 1, 48, 48});
  const torch::Tensor onGpu = gpu->score(images.to(torch::kCUDA));
  EXPECT_TRUE(onGpu.device().is_cpu());
  EXPECT_LE((onGpu - cpu->score(images)).abs().max().item<float>(), 1e-4f);
}

// --- Refused model directories ---

TEST_F(ScorerTest, RefusesAMissingDirectory) {
  const std::string message =
      modelError([&] { loadScorer((dir_.path() / "nowhere").string(), torch::kCPU); });
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesAMissingModelJson) {
  fs::remove(modelDir_ / "model.json");
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("model.json is missing"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesMissingWeights) {
  fs::remove(modelDir_ / "weights.pt");
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("weights.pt is missing"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesWeightsThatAreNotATorchArchive) {
  writeFile(modelDir_ / "weights.pt", "not a zip archive");
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("cannot read"), std::string::npos) << message;
  EXPECT_NE(message.find("weights.pt"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesBadJson) {
  writeFile(modelDir_ / "model.json", "{\"format\": \"comcl-model\", \"formatVersion\": 1,");
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("model.json is not valid JSON"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesAnUnknownArchitecture) {
  editJson(modelDir_, [](nlohmann::json& j) { j["architecture"]["name"] = "resnet9000"; });
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("unknown architecture \"resnet9000\""), std::string::npos) << message;
  EXPECT_NE(message.find("tiny-cnn"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesAnUnknownArchitectureParameter) {
  editJson(modelDir_, [](nlohmann::json& j) { j["architecture"]["params"]["widht"] = 8; });
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("unknown parameter \"widht\""), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesAnotherFormatVersion) {
  editJson(modelDir_, [](nlohmann::json& j) { j["formatVersion"] = 2; });
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("formatVersion 2 is not supported"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesAnotherFormat) {
  editJson(modelDir_, [](nlohmann::json& j) { j["format"] = "onnx"; });
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("format must be \"comcl-model\""), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesMissingOrMistypedFields) {
  editJson(modelDir_, [](nlohmann::json& j) { j.erase("inputSize"); });
  std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("inputSize is missing"), std::string::npos) << message;
  editJson(modelDir_, [](nlohmann::json& j) {
    j["inputSize"] = 32;
    j["normalisation"]["std"] = {0.2, 0.3};
  });
  message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("normalisation.std must be an array of 1 number"), std::string::npos) << message;
  editJson(modelDir_, [](nlohmann::json& j) {
    j["normalisation"]["std"] = {0.3};
    j["findings"] = {"effusion", "effusion"};
  });
  message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("names \"effusion\" twice"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesATensorOfTheWrongShapeNamingItAndBothShapes) {
  // Three findings in the weights, two in model.json: the head is [3, 8] where [2, 8] is needed.
  ModelFile three = tinyModel();
  three.findings.push_back("cardiomegaly");
  auto network = trainedNetwork(three);
  const fs::path directory = dir_.path() / "three";
  writeModelDirectory(directory.string(), three, *network);
  editJson(directory, [](nlohmann::json& j) { j["findings"] = {"effusion", "pneumothorax"}; });
  const std::string message = modelError([&] { loadScorer(directory.string(), torch::kCPU); });
  EXPECT_NE(message.find("\"head.weight\""), std::string::npos) << message;
  EXPECT_NE(message.find("[3, 8]"), std::string::npos) << message;
  EXPECT_NE(message.find("[2, 8]"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesAMissingTensor) {
  writeWeights(modelDir_ / "weights.pt", *network_, [](auto& tensors) {
    tensors.erase(std::find_if(tensors.begin(), tensors.end(),
                               [](const auto& t) { return t.first == "features.1.running_mean"; }));
  });
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("\"features.1.running_mean\" is missing"), std::string::npos) << message;
}

TEST_F(ScorerTest, RefusesAnExtraTensor) {
  writeWeights(modelDir_ / "weights.pt", *network_, [](auto& tensors) {
    tensors.emplace_back("features.9.weight", torch::zeros({2, 2}));
  });
  const std::string message = modelError([&] { loadScorer(modelDir_.string(), torch::kCPU); });
  EXPECT_NE(message.find("\"features.9.weight\" is not part of the architecture"), std::string::npos)
      << message;
}

TEST_F(ScorerTest, HandWrittenWeightsWithTheRightNamesLoad) {
  writeWeights(modelDir_ / "weights.pt", *network_, [](auto&) {});
  torch::manual_seed(8);
  const torch::Tensor images = torch::rand({2, 1, 32, 32});
  EXPECT_LE(
      (loadScorer(modelDir_.string(), torch::kCPU)->score(images) - expectedScores(*network_, model_, images))
          .abs()
          .max()
          .item<float>(),
      1e-6f);
}

// --- Writing ---

TEST_F(ScorerTest, WriteRefusesAnExistingDirectoryAndLeavesNoTemporaryDirectory) {
  const std::vector<std::string> before = entries(modelDir_.parent_path());
  const std::string message = modelError([&] { writeModelDirectory(modelDir_.string(), model_, *network_); });
  EXPECT_NE(message.find("refusing to overwrite"), std::string::npos) << message;
  fs::create_directories(dir_.path() / "models" / "empty");
  const std::string empty = modelError(
      [&] { writeModelDirectory((dir_.path() / "models" / "empty").string(), model_, *network_); });
  EXPECT_NE(empty.find("refusing to overwrite"), std::string::npos) << empty;
  EXPECT_EQ(entries(dir_.path() / "models"), (std::vector<std::string>{"empty", "v3"}));
  EXPECT_EQ(entries(modelDir_), (std::vector<std::string>{"model.json", "weights.pt"}));
  EXPECT_EQ(before, std::vector<std::string>{"v3"});
}

TEST_F(ScorerTest, WriteLeavesOnlyTheFinalDirectory) {
  writeModelDirectory((dir_.path() / "models" / "v4").string(), model_, *network_);
  EXPECT_EQ(entries(dir_.path() / "models"), (std::vector<std::string>{"v3", "v4"}));
}

TEST_F(ScorerTest, WriteRefusesANetworkThatDoesNotMatchTheArchitecture) {
  ModelFile wider = tinyModel();
  wider.architecture["params"]["width"] = 8;
  const std::string message =
      modelError([&] { writeModelDirectory((dir_.path() / "models" / "v5").string(), wider, *network_); });
  EXPECT_NE(message.find("does not match"), std::string::npos) << message;
  EXPECT_NE(message.find("features.0.weight"), std::string::npos) << message;
  EXPECT_EQ(entries(dir_.path() / "models"), std::vector<std::string>{"v3"});
}

TEST_F(ScorerTest, WriteRefusesAnInvalidModelFile) {
  ModelFile noFindings = tinyModel();
  noFindings.findings.clear();
  EXPECT_THROW(writeModelDirectory((dir_.path() / "models" / "v6").string(), noFindings, *network_),
               ModelError);
  ModelFile badVersion = tinyModel();
  badVersion.version = 0;
  EXPECT_THROW(writeModelDirectory((dir_.path() / "models" / "v6").string(), badVersion, *network_),
               ModelError);
  EXPECT_EQ(entries(dir_.path() / "models"), std::vector<std::string>{"v3"});
}

TEST(ArchitectureRegistryTest, BuildsTinyCnnWithItsParameters) {
  const auto network = buildNetwork({{"name", "tiny-cnn"}, {"params", {{"width", 6}, {"depth", 3}}}}, 1, 4);
  network->eval();
  EXPECT_EQ(network->forward(torch::rand({2, 1, 40, 40})).sizes(), (std::vector<std::int64_t>{2, 4}));
  int convolutions = 0;
  for (const auto& item : network->named_parameters()) {
    if (item.value().dim() == 4)
      ++convolutions;
  }
  EXPECT_EQ(convolutions, 3);
  // Defaults apply without params.
  EXPECT_NO_THROW(buildNetwork({{"name", "tiny-cnn"}}, 3, 1));
  EXPECT_THROW(buildNetwork({{"name", "tiny-cnn"}, {"params", {{"depth", 0}}}}, 1, 1), ModelError);
  EXPECT_THROW(buildNetwork({{"name", "tiny-cnn"}, {"params", {{"width", "wide"}}}}, 1, 1), ModelError);
  EXPECT_THROW(buildNetwork({{"name", "densenet121"}}, 1, 1), ModelError);
  EXPECT_THROW(buildNetwork(nlohmann::json::array(), 1, 1), ModelError);
  EXPECT_EQ(knownArchitectures(), (std::vector<std::string>{"resnet18", "resnet50", "tiny-cnn"}));
}

}  // namespace
}  // namespace comcl::training
