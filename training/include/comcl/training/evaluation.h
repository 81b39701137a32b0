// MedAug's evaluation protocol (methods.md §1.5) on the archive's own labels:
//   - a patient-level split (train / val / test) fixed in the index: patients never move once assigned, and
//     new patients are placed by a hash of their key, so later retrains see the same split;
//   - several random label budgets drawn from the labelled training images (a fraction such as 1 % or 10 %,
//     or a number of images), stratified so each draw keeps the class balance;
//   - linear probe: the encoder is frozen and a logistic-regression head is fitted on its features
//     (standardised; full-batch Adam with weight decay), or fine-tuning: the whole network is trained with
//     the head (Adam, MedAug's light augmentations);
//   - per label: AUC on the held-out test patients (binary), accuracy and quadratic-weighted kappa (graded
//     labels, 0..K-1), mean ± std over the draws.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "comcl/training/dataset.h"
#include "comcl/training/encoder_file.h"
#include "comcl/training/metrics.h"
#include "comcl/training/optim.h"
#include "comcl/training/resnet.h"

namespace comcl::training {

struct SplitConfig {
  double trainFraction = 0.7;
  double valFraction = 0.1;  // the rest is test
  std::uint64_t seed = 0;
};
// Gives every patient of `set` without a split one (by a hash of its key and the seed) and stores the new
// assignments in the index; returns the split of every patient of the set (patient key -> split).
std::map<std::string, std::string> ensurePatientSplit(storage::Index& index, const TrainingSet& set,
                                                      const SplitConfig& config);
// A short id of a split ("split-<hash>"), for model files.
std::string splitId(const std::map<std::string, std::string>& split);

// "10%" (a fraction of the labelled training images) or "50" (that many images).
struct LabelBudget {
  double fraction = 0;                                // > 0 when given as a percentage
  int count = 0;                                      // > 0 when given as a number
  static LabelBudget parse(const std::string& text);  // throws std::invalid_argument
  std::string toString() const;
};

struct ProtocolConfig {
  std::string mode = "linear";  // linear | finetune
  std::vector<std::string> labels;
  std::vector<LabelBudget> budgets{LabelBudget::parse("100%")};
  int draws = 5;  // random label draws per budget
  std::uint64_t seed = 0;
  int imageSize = 224;
  std::string device = "auto";
  int batchSize = 16;  // feature extraction and fine-tuning
  // linear probe
  int linearSteps = 300;
  double linearLearningRate = 1e-2;
  double linearWeightDecay = 1e-3;
  // fine-tuning
  int finetuneEpochs = 20;
  OptimConfig finetuneOptim;  // defaults: Adam 1e-4, constant schedule (set by ProtocolConfig())
  ProtocolConfig();
  nlohmann::json toJson() const;
};

// Which encoder the protocol starts from: a pre-trained encoder directory, or random initialisation.
struct EncoderSource {
  std::string directory;  // empty: random initialisation with `architecture`
  std::string architecture = "resnet18";
  std::string describe() const;
};

struct DrawResult {
  int trainImages = 0;
  int trainPositives = 0;  // binary labels
  double auc = 0;          // binary
  double accuracy = 0;
  double kappa = 0;  // graded
};

struct LabelResult {
  std::string finding;
  std::string budget;
  bool graded = false;
  int classes = 2;
  int testImages = 0;
  int testPositives = 0;
  int labelledTrainImages = 0;  // the pool the draws come from
  std::vector<DrawResult> draws;
  MeanStd auc, accuracy, kappa;
  nlohmann::json toJson() const;
};

struct ProtocolResult {
  std::vector<LabelResult> labels;
  std::string encoder;
  std::string dataSnapshot;
  std::string splitId;
  std::map<std::string, int> splitPatients;  // split -> patients
  nlohmann::json toJson() const;
};

using ProtocolProgress = std::function<void(const std::string& message)>;

// Runs the protocol. Throws DataError for a label absent from the set, no labelled test images, a budget that
// keeps no positive (the message says how many it would keep), and TrainingError-like problems from the
// encoder (ModelError).
ProtocolResult runProtocol(const TrainingSet& set, const storage::ImageCache& cache,
                           const std::map<std::string, std::string>& split, const EncoderSource& encoder,
                           const ProtocolConfig& config, const ProtocolProgress& progress = {},
                           const std::atomic<bool>* cancel = nullptr);

// Fits each binary label's head on every labelled training image (mode as configured) and writes a model
// directory the plugin's scorer loads (scorer.h), with the protocol's metrics, the data snapshot, the split
// (split.json) and a PyTorch export of the weights (weights.pth). Graded labels are left out (the scorer
// gives one probability per finding).
void trainAndSaveModel(const TrainingSet& set, const storage::ImageCache& cache,
                       const std::map<std::string, std::string>& split, const EncoderSource& encoder,
                       const ProtocolConfig& config, const ProtocolResult& metrics, int version,
                       const std::string& directory);

// The k-NN monitor of pre-training (as in MoCo): after an epoch, the top-1 accuracy of the weighted k-NN
// classifier (knnAccuracy) on the backbone's features, with the split's train images that carry the label
// as neighbours and its test images as queries.
struct KnnMonitorConfig {
  std::string label;
  EncoderInfo input;  // image size, channels and normalisation the backbone trains with
  int batchSize = 64;
  int k = 20;
  double temperature = 0.1;
};

// Throws DataError up front for a label no image carries, or a split that leaves no train or no test image
// with it. The returned function fits Pretrainer::run's EpochMonitor; it puts the backbone in eval mode.
std::function<double(ResNet& backbone, int epoch)> knnMonitor(const TrainingSet& set,
                                                              const storage::ImageCache& cache,
                                                              const std::map<std::string, std::string>& split,
                                                              const KnnMonitorConfig& config);

}  // namespace comcl::training
