// Model directories, the architecture registry and the scorer. See scorer.h for the format.
#include "comcl/training/scorer.h"

#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/utils.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "comcl/training/resnet.h"
#include "comcl/training/tensor_batch.h"
#include "image_ops.h"

namespace comcl::training {

namespace fs = std::filesystem;

namespace {

constexpr const char* kModelJson = "model.json";
constexpr const char* kWeights = "weights.pt";

// ---------------------------------------------------------------------------------------------------------
// model.json

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw ModelError("model.json: " + field + " " + why);
}

const nlohmann::json& member(const nlohmann::json& object, const char* key, const std::string& path) {
  const auto it = object.find(key);
  if (it == object.end())
    invalid(path + key, "is missing");
  return *it;
}

int integerField(const nlohmann::json& object, const char* key, int low, int high) {
  const nlohmann::json& value = member(object, key, "");
  if (!value.is_number_integer())
    invalid(key, "must be an integer, not " + value.dump());
  const auto number = value.get<std::int64_t>();
  if (number < low || number > high) {
    invalid(key, "must be between " + std::to_string(low) + " and " + std::to_string(high) + ", not " +
                     std::to_string(number));
  }
  return static_cast<int>(number);
}

std::string stringField(const nlohmann::json& object, const char* key) {
  const nlohmann::json& value = member(object, key, "");
  if (!value.is_string())
    invalid(key, "must be a string, not " + value.dump());
  return value.get<std::string>();
}

std::vector<double> channelValues(const nlohmann::json& normalisation, const char* key, int channels) {
  const std::string name = std::string("normalisation.") + key;
  const nlohmann::json& value = member(normalisation, key, "normalisation.");
  if (!value.is_array() || value.size() != static_cast<std::size_t>(channels))
    invalid(name, "must be an array of " + std::to_string(channels) + " number(s), not " + value.dump());
  std::vector<double> values;
  for (const auto& item : value) {
    if (!item.is_number())
      invalid(name, "must hold numbers, not " + item.dump());
    values.push_back(item.get<double>());
  }
  return values;
}

void validate(const ModelFile& m) {
  if (m.version < 1)
    invalid("version", "must be at least 1, not " + std::to_string(m.version));
  if (!m.architecture.is_object() || !m.architecture.contains("name") || !m.architecture["name"].is_string())
    invalid("architecture", "must be an object with a string \"name\", not " + m.architecture.dump());
  if (m.architecture.contains("params") && !m.architecture["params"].is_object())
    invalid("architecture.params", "must be an object, not " + m.architecture["params"].dump());
  if (m.inputSize < 8 || m.inputSize > 4096)
    invalid("inputSize", "must be between 8 and 4096, not " + std::to_string(m.inputSize));
  if (m.channels != 1 && m.channels != 3)
    invalid("channels", "must be 1 or 3, not " + std::to_string(m.channels));
  if (m.findings.empty())
    invalid("findings", "must name at least one finding");
  std::set<std::string> seen;
  for (const auto& finding : m.findings) {
    if (finding.empty())
      invalid("findings", "must not hold an empty name");
    if (!seen.insert(finding).second)
      invalid("findings", "names \"" + finding + "\" twice");
  }
  const auto channels = static_cast<std::size_t>(m.channels);
  if (m.mean.size() != channels || m.stddev.size() != channels) {
    invalid("normalisation", "must give " + std::to_string(channels) + " mean and std value(s) per channel");
  }
  for (double s : m.stddev) {
    if (!(s > 0))
      invalid("normalisation.std", "must be positive, not " + std::to_string(s));
  }
  if (!m.metrics.is_object())
    invalid("metrics", "must be an object, not " + m.metrics.dump());
}

// ---------------------------------------------------------------------------------------------------------
// Architectures

int networkParam(const nlohmann::json& params, const char* key, int fallback, int low, int high) {
  const auto it = params.find(key);
  if (it == params.end())
    return fallback;
  if (!it->is_number_integer()) {
    throw ModelError(std::string("architecture parameter ") + key + " must be an integer, not " + it->dump());
  }
  const auto value = it->get<std::int64_t>();
  if (value < low || value > high) {
    throw ModelError(std::string("architecture parameter ") + key + " must be between " +
                     std::to_string(low) + " and " + std::to_string(high) + ", not " + std::to_string(value));
  }
  return static_cast<int>(value);
}

void refuseUnknownParams(const std::string& architecture, const nlohmann::json& params,
                         const std::set<std::string>& known) {
  for (const auto& item : params.items()) {
    if (known.count(item.key()) == 0)
      throw ModelError("unknown parameter \"" + item.key() + "\" for architecture " + architecture);
  }
}

// A few stride-2 conv + batch-norm + ReLU blocks, global average pooling and a linear head: small enough to
// test the whole path in milliseconds.
class TinyCnn final : public ScoringNetwork {
 public:
  TinyCnn(int channels, int outputs, int width, int depth) {
    features_ = register_module("features", torch::nn::Sequential());
    int in = channels;
    int out = width;
    for (int block = 0; block < depth; ++block) {
      features_->push_back(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(2).padding(1).bias(false)));
      features_->push_back(torch::nn::BatchNorm2d(out));
      features_->push_back(torch::nn::ReLU());
      in = out;
      out *= 2;
    }
    head_ = register_module("head", torch::nn::Linear(in, outputs));
  }

  torch::Tensor forward(torch::Tensor images) override {
    return head_->forward(features_->forward(images).mean({2, 3}));
  }

 private:
  torch::nn::Sequential features_{nullptr};
  torch::nn::Linear head_{nullptr};
};

std::shared_ptr<ScoringNetwork> buildTinyCnn(const nlohmann::json& params, int channels, int outputs) {
  refuseUnknownParams("tiny-cnn", params, {"width", "depth"});
  const int width = networkParam(params, "width", 16, 1, 256);
  const int depth = networkParam(params, "depth", 3, 1, 6);
  return std::make_shared<TinyCnn>(channels, outputs, width, depth);
}

template <int Depth>
std::shared_ptr<ScoringNetwork> buildResNet(const nlohmann::json& params, int channels, int outputs) {
  refuseUnknownParams("resnet" + std::to_string(Depth), params, {});
  return std::make_shared<ResNet>(Depth, channels, outputs);
}

using Builder = std::shared_ptr<ScoringNetwork> (*)(const nlohmann::json& params, int channels, int outputs);

const std::map<std::string, Builder>& registry() {
  static const std::map<std::string, Builder> builders = {
      {"tiny-cnn", &buildTinyCnn}, {"resnet18", &buildResNet<18>}, {"resnet50", &buildResNet<50>}};
  return builders;
}

// Every tensor the weights file holds for a network: parameters, then buffers, by name in the module.
// ---------------------------------------------------------------------------------------------------------
// The scorer

class NetworkScorer final : public Scorer {
 public:
  NetworkScorer(ModelFile model, std::shared_ptr<ScoringNetwork> network, torch::Device device)
      : model_(std::move(model)), network_(std::move(network)), device_(device) {
    const auto options = torch::TensorOptions().dtype(torch::kFloat32).device(device_);
    const std::int64_t channels = model_.channels;
    mean_ = torch::tensor(std::vector<float>(model_.mean.begin(), model_.mean.end()), options)
                .reshape({1, channels, 1, 1});
    std_ = torch::tensor(std::vector<float>(model_.stddev.begin(), model_.stddev.end()), options)
               .reshape({1, channels, 1, 1});
    network_->eval();
  }

  int modelVersion() const override { return model_.version; }
  const std::vector<std::string>& findings() const override { return model_.findings; }
  int inputSize() const override { return model_.inputSize; }

  std::string description() const override {
    const std::size_t n = model_.findings.size();
    return "v" + std::to_string(model_.version) + " " + model_.architecture.at("name").get<std::string>() +
           " (" + std::to_string(n) + (n == 1 ? " finding" : " findings") + ") on " + device_.str();
  }

  torch::Tensor score(const torch::Tensor& images) override {
    if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3)) {
      throw std::invalid_argument("images must be a [N, 1 or 3, S, S] tensor, not " + shapeText(images));
    }
    const auto findings = static_cast<std::int64_t>(model_.findings.size());
    const std::int64_t n = images.size(0);
    if (n == 0)
      return torch::empty({0, findings}, torch::kFloat32);

    torch::NoGradGuard noGrad;
    network_->eval();
    torch::Tensor x = images.to(device_, torch::kFloat32);
    const std::int64_t size = model_.inputSize;
    x = withChannels(detail::resizedTo(x, size), model_.channels);
    x = (x - mean_) / std_;
    torch::Tensor logits = network_->forward(x);
    if (logits.dim() != 2 || logits.size(0) != n || logits.size(1) != findings) {
      throw std::logic_error("network output " + shapeText(logits) + " does not match [" + std::to_string(n) +
                             ", " + std::to_string(findings) + "]");
    }
    return torch::sigmoid(logits).to(torch::kCPU, torch::kFloat32).contiguous();
  }

 private:
  ModelFile model_;
  std::shared_ptr<ScoringNetwork> network_;
  torch::Device device_;
  torch::Tensor mean_;
  torch::Tensor std_;
};

}  // namespace

// -------------------------------------------------------------------------------------------------------------

nlohmann::json toJson(const ModelFile& model) {
  nlohmann::json json;
  json["format"] = kModelFormat;
  json["formatVersion"] = kModelFormatVersion;
  json["version"] = model.version;
  json["architecture"] = model.architecture;
  if (!json["architecture"].contains("params"))
    json["architecture"]["params"] = nlohmann::json::object();
  json["inputSize"] = model.inputSize;
  json["channels"] = model.channels;
  json["findings"] = model.findings;
  json["normalisation"] = {{"mean", model.mean}, {"std", model.stddev}};
  json["createdAt"] = model.createdAt;
  json["method"] = model.method;
  json["metrics"] = model.metrics;
  if (!model.training.empty())
    json["training"] = model.training;
  return json;
}

ModelFile modelFileFromJson(const nlohmann::json& json) {
  if (!json.is_object())
    throw ModelError("model.json must hold a JSON object, not " + std::string(json.type_name()));
  const std::string format = stringField(json, "format");
  if (format != kModelFormat)
    invalid("format", "must be \"" + std::string(kModelFormat) + "\", not \"" + format + "\"");
  const nlohmann::json& formatVersion = member(json, "formatVersion", "");
  if (!formatVersion.is_number_integer() || formatVersion.get<std::int64_t>() != kModelFormatVersion) {
    invalid("formatVersion", formatVersion.dump() + " is not supported (this build reads formatVersion " +
                                 std::to_string(kModelFormatVersion) + ")");
  }
  ModelFile m;
  m.version = integerField(json, "version", 1, std::numeric_limits<int>::max());
  m.architecture = member(json, "architecture", "");
  if (m.architecture.is_object() && !m.architecture.contains("params"))
    m.architecture["params"] = nlohmann::json::object();
  m.inputSize = integerField(json, "inputSize", 8, 4096);
  m.channels = integerField(json, "channels", 1, 3);
  const nlohmann::json& findings = member(json, "findings", "");
  if (!findings.is_array())
    invalid("findings", "must be an array of strings, not " + findings.dump());
  for (const auto& finding : findings) {
    if (!finding.is_string())
      invalid("findings", "must hold strings, not " + finding.dump());
    m.findings.push_back(finding.get<std::string>());
  }
  const nlohmann::json& normalisation = member(json, "normalisation", "");
  if (!normalisation.is_object())
    invalid("normalisation", "must be an object with \"mean\" and \"std\", not " + normalisation.dump());
  m.mean = channelValues(normalisation, "mean", m.channels);
  m.stddev = channelValues(normalisation, "std", m.channels);
  m.createdAt = stringField(json, "createdAt");
  m.method = stringField(json, "method");
  m.metrics = json.contains("metrics") ? json["metrics"] : nlohmann::json::object();
  m.training = json.contains("training") ? json["training"] : nlohmann::json::object();
  validate(m);
  return m;
}

ModelFile readModelFile(const std::string& modelDirectory) {
  const fs::path directory(modelDirectory);
  std::error_code error;
  if (!fs::is_directory(directory, error))
    throw ModelError("model directory " + modelDirectory + " does not exist");
  const fs::path path = directory / kModelJson;
  if (!fs::exists(path, error))
    throw ModelError(path.string() + " is missing");
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw ModelError("cannot open " + path.string() + ": " + std::strerror(errno));
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ModelError(path.string() + " is not valid JSON: " + e.what());
  }
  try {
    return modelFileFromJson(json);
  } catch (const ModelError& e) {
    throw ModelError(directory.string() + ": " + e.what());
  }
}

std::vector<std::string> knownArchitectures() {
  std::vector<std::string> names;
  for (const auto& item : registry())
    names.push_back(item.first);
  return names;
}

std::shared_ptr<ScoringNetwork> buildNetwork(const nlohmann::json& architecture, int channels, int outputs) {
  if (!architecture.is_object() || !architecture.contains("name") || !architecture["name"].is_string())
    throw ModelError("an architecture must be an object with a string \"name\", not " + architecture.dump());
  if (channels < 1 || outputs < 1) {
    throw ModelError("a network needs at least one input channel and one output, not " +
                     std::to_string(channels) + " and " + std::to_string(outputs));
  }
  const std::string name = architecture["name"].get<std::string>();
  const auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const std::string& item : knownArchitectures())
      known += (known.empty() ? "" : ", ") + item;
    throw ModelError("unknown architecture \"" + name + "\" (known: " + known + ")");
  }
  const nlohmann::json params =
      architecture.contains("params") ? architecture["params"] : nlohmann::json::object();
  if (!params.is_object())
    throw ModelError("architecture params must be an object, not " + params.dump());
  return it->second(params, channels, outputs);
}

namespace {

// The network of a model directory with its weights loaded (on the CPU).
std::shared_ptr<ScoringNetwork> loadNetwork(const std::string& modelDirectory, const ModelFile& model) {
  const fs::path directory(modelDirectory);
  std::shared_ptr<ScoringNetwork> network;
  try {
    network = buildNetwork(model.architecture, model.channels, static_cast<int>(model.findings.size()));
  } catch (const ModelError& e) {
    throw ModelError(directory.string() + ": " + e.what());
  }
  const std::string weights = (directory / kWeights).string();
  torch::serialize::InputArchive archive;
  loadArchive(archive, weights);
  try {
    readStateStrict(archive, *network);
  } catch (const ModelError& e) {
    throw ModelError(weights + ": " + e.what());
  } catch (const std::exception& e) {
    throw ModelError("cannot read " + weights + ": " + firstLine(e.what()));
  }
  return network;
}

}  // namespace

std::unique_ptr<Scorer> loadScorer(const std::string& modelDirectory, torch::Device device) {
  ModelFile model = readModelFile(modelDirectory);
  std::shared_ptr<ScoringNetwork> network = loadNetwork(modelDirectory, model);
  network->to(device);
  return std::make_unique<NetworkScorer>(std::move(model), std::move(network), device);
}

std::string pytorchWeights(const std::string& modelDirectory) {
  const fs::path exported = fs::path(modelDirectory) / "weights.pth";
  if (fs::is_regular_file(exported)) {
    std::ifstream in(exported, std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (!in.good() && !in.eof())
      throw ModelError("cannot read " + exported.string());
    return bytes.str();
  }
  const ModelFile model = readModelFile(modelDirectory);
  return pickledStateDict(*loadNetwork(modelDirectory, model));
}

void writeModelDirectory(const std::string& directory, const ModelFile& model, torch::nn::Module& network,
                         const std::map<std::string, std::string>& extraFiles) {
  ModelFile file = model;
  if (file.architecture.is_object() && !file.architecture.contains("params"))
    file.architecture["params"] = nlohmann::json::object();
  if (file.createdAt.empty())
    file.createdAt = utcNow();
  validate(file);
  const std::shared_ptr<ScoringNetwork> reference =
      buildNetwork(file.architecture, file.channels, static_cast<int>(file.findings.size()));
  if (const std::string why = stateMismatch(network, *reference); !why.empty())
    throw ModelError("the network does not match architecture " + file.architecture.dump() + ": " + why);
  writeDirectoryAtomically(directory, [&](const fs::path& temp) {
    writeFileAtomically((temp / kModelJson).string(), toJson(file).dump(2) + "\n");
    torch::serialize::OutputArchive archive;
    writeState(archive, network);
    saveArchiveAtomically(archive, (temp / kWeights).string());
    for (const auto& [name, content] : extraFiles) {
      if (name.empty() || name.find('/') != std::string::npos || name == kModelJson || name == kWeights)
        throw ModelError("invalid extra file name \"" + name + "\" for a model directory");
      writeFileAtomically((temp / name).string(), content);
    }
  });
}

}  // namespace comcl::training
