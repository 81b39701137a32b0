// MedAug's evaluation protocol (methods.md §1.5) on the archive's own labels:
//   - a patient-level split (train / val / test) fixed in the index: patients never move once assigned, and
//     new patients are placed by a hash of their key, so later retrains see the same split;
//   - several random label budgets drawn from the labelled training images (a fraction such as 1 % or 10 %,
//     or a number of images), stratified so each draw keeps the class balance;
//   - linear probe: the encoder is frozen and a logistic-regression head is fitted on its features
//     (standardised; full-batch Adam with weight decay), or fine-tuning: the whole network is trained with
//     the head (Adam, MedAug's light augmentations);
//   - per label: AUC on the held-out test patients (binary), accuracy and quadratic-weighted kappa (graded
//     labels, 0..K-1), mean ± std over the draws;
//   - optionally (CoMCL, methods.md §2.4) the same metrics per quality level of the test images, and on the
//     test images degraded synthetically at a list of severities with the head fitted on clean images
//     (docs/methods/comcl.md, "Evaluation per quality level and degradation sweep").
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
#include "comcl/training/degrade.h"
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

// The quality levels the per-level breakdown always reports, in this order: the plugin's flags good,
// usable, reject, and "none" for an image without a flag. Any other flag on a test image (the index stores
// none) would be reported after these, in alphabetical order.
const std::vector<std::string>& qualityLevels();

// A synthetic degradation sweep of the held-out test images.
struct DegradationSweep {
  // "composite": radiographDegradation() (one or two radiograph kinds per image) with the severity of every
  // step fixed to the sweep's; or the name of one kind (degrade.h, e.g. "blur"), applied alone.
  std::string spec = "composite";
  std::vector<double> severities{0, 0.25, 0.5, 0.75, 1};

  // Throws std::invalid_argument naming the value: an unknown spec, no severity, a severity outside [0, 1].
  void validate() const;
  // A spec and a comma-separated severity list ("0,0.25,1"), validated.
  static DegradationSweep parse(const std::string& spec, const std::string& severities);
  nlohmann::json toJson() const;  // {"spec", "severities"}
};

// "0,0.25,1" -> {0, 0.25, 1}. Throws std::invalid_argument naming the entry that is not a number in [0, 1],
// or for an empty list.
std::vector<double> parseSeverities(const std::string& text);

// Degrades test images as the sweep does. Each image gets its own random draws, from a generator seeded by
// the protocol seed and the image's key (its resource id) alone: an image is degraded the same way whatever
// the batch it is in, the label, the draw and the encoder, so every method is measured on the same degraded
// images. The draws do not depend on the severity either (degrade.h), so along a sweep an image keeps its
// kinds and shapes and only their strength changes; severity 0 returns the images unchanged.
class SweepDegrader {
 public:
  SweepDegrader(DegradationSweep sweep, std::uint64_t seed);  // validates
  // images [N, C, H, W] in [0, 1] (any device), one key per image. Throws std::invalid_argument for a
  // severity outside [0, 1] or a key count that does not match.
  torch::Tensor operator()(const torch::Tensor& images, const std::vector<std::string>& keys,
                           double severity) const;
  const DegradationSweep& sweep() const { return sweep_; }

 private:
  DegradationSweep sweep_;
  std::uint64_t seed_;
  std::optional<DegradationKind> kind_;  // empty: composite
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
  // Also report the metrics per quality level of the test images (LabelResult::byQuality).
  bool byQuality = false;
  // Also score the test images degraded at each severity (LabelResult::sweep), seeded by `seed`.
  std::optional<DegradationSweep> sweep;
  ProtocolConfig();
  nlohmann::json toJson() const;
};

// Which encoder the protocol starts from: a pre-trained encoder directory, or random initialisation.
struct EncoderSource {
  std::string directory;  // empty: random initialisation with `architecture`
  std::string architecture = "resnet18";
  int channels = 1;  // random initialisation: input channels (1 or 3; a pre-trained encoder has its own)
  std::string describe() const;
};

// The metrics of one draw's predictions on a subset of the test images: the images of one quality level, or
// all of them degraded at one severity.
struct SubsetScore {
  int images = 0;
  std::vector<int> classCounts;    // test images per class 0..K-1 (binary: negatives, positives)
  std::optional<double> auc;       // binary labels only; empty where undefined, `missing` says why
  std::optional<double> accuracy;  // empty without images
  std::optional<double> kappa;     // quadratic-weighted (Cohen's kappa for 2 classes); empty without images
  std::string missing;             // why auc (binary) or every metric (no images) is empty
  int positives() const { return classCounts.size() > 1 ? classCounts[1] : 0; }
};

// Scores `logits` (one row per test image: [N, 1] binary, [N, K] graded) on the rows `rows` of the test
// images, whose truths are `truth` (all N). Never throws for a subset without images or with one class:
// the metrics that are undefined there stay empty and `missing` says why.
SubsetScore scoreSubset(const torch::Tensor& logits, const std::vector<int>& truth, int classes,
                        const std::vector<std::size_t>& rows);

struct DrawResult {
  int trainImages = 0;
  int trainPositives = 0;  // binary labels
  double auc = 0;          // binary
  double accuracy = 0;
  double kappa = 0;                    // graded
  std::vector<SubsetScore> byQuality;  // one per LabelResult::byQuality entry
  std::vector<SubsetScore> sweep;      // one per LabelResult::sweep entry
};

// A subset's metrics over the draws: mean ± std of each metric over the draws where it is defined.
struct SubsetSummary {
  std::string level;    // per quality level: the level
  double severity = 0;  // in a sweep: the severity
  int images = 0;
  std::vector<int> classCounts;
  std::optional<MeanStd> auc, accuracy, kappa;
  std::string missing;  // why auc (or everything) is empty
  int positives() const { return classCounts.size() > 1 ? classCounts[1] : 0; }
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
  std::vector<SubsetSummary> byQuality;     // ProtocolConfig::byQuality: qualityLevels() order, then others
  std::optional<DegradationSweep> sweep;    // what was swept (ProtocolConfig::sweep)
  std::uint64_t sweepSeed = 0;              // the seed of its degradations (the protocol's)
  std::vector<SubsetSummary> sweepResults;  // one per severity of `sweep`, in its order
  // Binary labels: AUC (and accuracy); graded: accuracy and kappa. "byQuality" and "sweep" when requested,
  // each subset with its images, positives (binary) or classCounts (graded), mean ± std of AUC (binary),
  // accuracy and kappa, null with "missing" where undefined; each draw carries its own values.
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
// encoder (ModelError); std::invalid_argument for a bad configuration (a bad sweep among them) before any
// work. With config.sweep, the linear probe keeps each draw's head and scores it on each severity's features
// (the test set is encoded once per severity and label); fine-tuning scores each draw's network on every
// severity before the next draw. The test images are encoded in the same batches clean and degraded, so
// severity 0 reproduces the clean result exactly.
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
