// Diagnosis scores for cached images: a model version on disk (a model directory), the networks it can
// describe (the architecture registry) and the Scorer that turns image batches into per-finding
// probabilities. LibTorch and nlohmann_json only, so it builds against LibTorch 1.13 and 2.x alike.
//
// A model directory holds exactly two files:
//   model.json  {"format": "comcl-model", "formatVersion": 1, "version": 3,
//                "architecture": {"name": "tiny-cnn", "params": {"width": 16, "depth": 3}},
//                "inputSize": 256, "channels": 1, "findings": ["effusion", "pneumothorax"],
//                "normalisation": {"mean": [0.5], "std": [0.25]},
//                "createdAt": "2024-05-01T12:00:00Z", "method": "supervised", "metrics": {...}}
//   weights.pt  a torch::serialize::OutputArchive holding every parameter and buffer of the network under
//               its name in the module (named_parameters() / named_buffers(): "features.0.weight", ...).
// Scoring: images [N, 1, H, W] in [0, 1] are resized (bilinear) to inputSize x inputSize when needed,
// repeated to `channels` channels, normalised per channel ((x - mean) / std), run through the network in
// eval mode, and the logits go through a sigmoid (multi-label: findings are independent).
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "comcl/training/model_io.h"

namespace comcl::training {

// A loaded model version that turns images into per-finding probabilities. Not thread-safe: callers
// serialise.
class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual int modelVersion() const = 0;
  virtual const std::vector<std::string>& findings() const = 0;
  // Images are resized (bilinear, no antialiasing) to this size when theirs differs.
  virtual int inputSize() const = 0;
  // e.g. "v3 tiny-cnn (2 findings) on cpu"
  virtual std::string description() const = 0;
  // images: float [N, 1 or 3, S, S] in [0, 1] on any device (brought to the model's channels as
  // withChannels does) -> float [N, findings().size()] probabilities in [0, 1] on the CPU. Throws
  // std::invalid_argument for a tensor of another rank or channel count.
  virtual torch::Tensor score(const torch::Tensor& images) = 0;
};

constexpr const char* kModelFormat = "comcl-model";
constexpr int kModelFormatVersion = 1;

// The parsed model.json.
struct ModelFile {
  int version = 0;  // the model version, >= 1; one directory per version
  // {"name": "tiny-cnn", "params": {...}}: what buildNetwork() builds.
  nlohmann::json architecture = nlohmann::json::object();
  int inputSize = 256;                // the network sees inputSize x inputSize images
  int channels = 1;                   // 1, or 3 for networks made for RGB (the grey image is repeated)
  std::vector<std::string> findings;  // one output per finding, in this order; names are unique
  std::vector<double> mean{0.0};      // per channel, applied to [0, 1] images
  std::vector<double> stddev{1.0};    // per channel, each > 0 (model.json: normalisation.std)
  std::string createdAt;  // ISO 8601 UTC; writeModelDirectory() fills in the current time when empty
  std::string method;     // how it was trained: "supervised", "moco+medaug", ...
  nlohmann::json metrics = nlohmann::json::object();  // free-form evaluation results
  // Provenance, free-form: the data snapshot id, the patient split's id and counts (split.json holds the
  // split itself), the encoder it was built on, the protocol's settings. Omitted from model.json when empty.
  nlohmann::json training = nlohmann::json::object();
};

// model.json text <-> ModelFile. fromJson validates everything and throws ModelError naming the field.
nlohmann::json toJson(const ModelFile& model);
ModelFile modelFileFromJson(const nlohmann::json& json);
// Reads and validates <modelDirectory>/model.json only (no weights): for listing model versions.
ModelFile readModelFile(const std::string& modelDirectory);

// Every network of the registry: normalised images [N, channels, S, S] -> logits [N, outputs].
class ScoringNetwork : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor images) = 0;
};

// Architecture registry: builds the network for {"name": ..., "params": {...}} with freshly initialised
// weights. "tiny-cnn" (params: width = channels of the first block, default 16, 1..256; depth = number of
// conv + batch-norm + ReLU blocks, each halving the resolution and doubling the channels, default 3, 1..6;
// then global average pooling and a linear head); "resnet18" and "resnet50" (resnet.h: torchvision's layout
// and parameter names, no params). Unknown names and parameters throw ModelError.
std::shared_ptr<ScoringNetwork> buildNetwork(const nlohmann::json& architecture, int channels, int outputs);
std::vector<std::string> knownArchitectures();

// Loads a model directory onto `device`. Throws ModelError with a message naming the directory and the
// problem: a missing file, bad JSON, an unknown architecture, an unsupported format version, or a tensor
// in weights.pt that is missing, extra, or of the wrong shape (naming the tensor and both shapes).
std::unique_ptr<Scorer> loadScorer(const std::string& modelDirectory, torch::Device device = torch::kCPU);

// The model's weights as a file PyTorch reads with torch.load (a name -> tensor dict, see exportStateDict):
// the directory's weights.pth when it has one (models written by `comcl linear-eval/finetune`), otherwise
// exported from weights.pt. Throws ModelError as loadScorer does.
std::string pytorchWeights(const std::string& modelDirectory);

// Writes a model directory atomically: everything goes into a temporary directory beside `directory`, is
// fsynced, and is renamed into place (the parent directory is created if needed). Refuses (ModelError) an
// existing `directory`, an invalid `model`, and a network whose parameters and buffers differ in name or
// shape from what model.architecture builds, so that what it writes always loads. Leaves no temporary
// directory behind, also when it fails.
// `extraFiles` (file name -> content) are written beside model.json, e.g. split.json and the PyTorch export.
void writeModelDirectory(const std::string& directory, const ModelFile& model, torch::nn::Module& network,
                         const std::map<std::string, std::string>& extraFiles = {});

}  // namespace comcl::training
