// Contrastive pre-training over a TrainingSet: MoCo v2, MedAug's metadata positives on top of it, and CoMCL's
// quality-aware multi-level views and losses (comcl_views.h, comcl_loss.h).
//
// A run lives in a run directory:
//   run.json        the configuration and the data snapshot id, written when the run starts
//   checkpoint.pt   model (both encoders, the queue), optimiser state and position, replaced atomically every
//                   `checkpointEverySteps` steps (0: at the end of every epoch) and when cancelled
//   encoder/        the pre-trained backbone (encoder_file.h), written atomically when the last epoch ends
// Starting a run in a directory that holds a checkpoint resumes it, after checking that the configuration
// and the data snapshot are the same (TrainingError names what differs). Random draws (epoch order, positive
// sampling, augmentation, shuffle-BN) come from generators seeded by (seed, epoch, step), so a resumed run
// continues exactly as an uninterrupted one, and on the CPU a fixed seed gives the same weights.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "comcl/storage/image_cache.h"
#include "comcl/training/augment.h"
#include "comcl/training/comcl_loss.h"
#include "comcl/training/comcl_views.h"
#include "comcl/training/dataset.h"
#include "comcl/training/moco.h"
#include "comcl/training/optim.h"
#include "comcl/training/pairs.h"
#include "comcl/training/resnet.h"

namespace comcl::training {

// A run that cannot start or continue: bad configuration for this data, a mismatched or corrupt checkpoint,
// the device running out of memory. The message says what to change.
class TrainingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// CoMCL's own settings. The encoders, momentum and the healthy queue's length come from PretrainConfig::moco
// (queueSize is the healthy queue K; moco.temperature must equal loss.temperature); the views'
// augmentation is PretrainConfig::augment.
struct ComclConfig {
  ComclLossConfig loss;
  ComclViewConfig views;
  int imageQueueSize = 4096;  // L_img's queue of whole-image keys

  void validate() const;  // std::invalid_argument naming the field
  nlohmann::json toJson() const;
  static ComclConfig fromJson(const nlohmann::json& json);
};

struct PretrainConfig {
  std::string method = "medaug";  // moco (instance pairs) | medaug (same-patient pairs) | comcl
  PairStrategy pairs;             // moco and comcl: instance; medaug: a same-patient strategy
  MocoConfig moco;
  AugmentConfig augment;  // augment.outputSize is the training image size (CoMCL: of every view)
  ComclConfig comcl;      // method comcl only
  OptimConfig optim;
  int epochs = 20;
  int batchSize = 16;
  std::uint64_t seed = 0;
  std::string device = "auto";     // auto | cpu | cuda | cuda:N
  std::string precision = "fp32";  // fp32 | bf16 | fp16 (autocast; CUDA only)
  int loaderThreads = 2;           // background threads reading the image cache
  int prefetchDepth = 4;           // batches read ahead
  int checkpointEverySteps = 0;    // 0: at the end of every epoch
  double mean = 0.5;               // input normalisation of [0, 1] images
  double stddev = 0.25;

  // Defaults of a method: MoCo v2 uses instance pairs and MoCo v2's augmentations; MedAug uses same
  // patient + same study + all lateralities and the narrow crop scale [0.95, 1] (methods.md §1.2-1.3),
  // with the paper's Adam 1e-4, batch 16, 20 epochs, T 0.2, K 24576, m 0.999, step schedule. CoMCL uses the
  // authors' T 0.07, healthy queue K 7200, m 0.999, SGD 0.02 Nesterov momentum 0.9, weight decay 5e-4,
  // cosine schedule (methods.md §2.2) and comclAugment().
  static PretrainConfig forMethod(const std::string& method, int imageSize);
  // The queue length to use on `images` images: moco.queueSize, or, when that exceeds the images, about
  // half of them (a multiple of the batch, at least one batch): a queue longer than the data holds several
  // stale keys of every image, the query's own among them.
  int queueSizeFor(std::size_t images) const;
  void validate() const;  // std::invalid_argument naming the field
  nlohmann::json toJson() const;
  static PretrainConfig fromJson(const nlohmann::json& json);
};

struct PretrainProgress {
  int epoch = 0;  // 1-based, the epoch in progress
  int epochs = 0;
  std::int64_t step = 0;  // 1-based within the epoch
  std::int64_t stepsPerEpoch = 0;
  std::int64_t globalStep = 0;  // steps done in the whole run
  std::int64_t totalSteps = 0;
  double loss = 0;             // of the last step
  double epochLoss = 0;        // mean over the epoch so far
  double imagesPerSecond = 0;  // query images per second over the recent steps, data loading included
  double etaSeconds = 0;
  double learningRate = 0;
  double dataWaitShare = 0;  // share of the recent wall time spent waiting for the data path
};

struct PretrainResult {
  bool completed = false;  // all epochs done and the encoder written
  bool cancelled = false;
  bool resumed = false;  // continued from a checkpoint
  int epochsDone = 0;
  std::int64_t stepsDone = 0;
  std::vector<double> epochLosses;
  std::vector<double> monitor;               // the epoch-end monitor's values, when one was given
  double imagesPerSecond = 0;                // over this process's steps
  double imagesPerSecondAfterFirstStep = 0;  // the same without the first step (one-off CUDA/cuDNN set-up)
  double dataWaitShare = 0;
  // Share of the step time spent making the views (augmentation; CoMCL: also degradation and patch
  // extraction), on the CPU; -1 on CUDA, where the clock sees only kernel launches.
  double viewShare = 0;
  std::string encoderDirectory;  // set when completed
  std::string device;
};

using ProgressCallback = std::function<void(const PretrainProgress&)>;
// Called after each epoch with the query encoder's backbone (e.g. a k-NN monitor); its value is recorded.
using EpochMonitor = std::function<double(ResNet& backbone, int epoch)>;

class Pretrainer {
 public:
  // Throws DataError for a set the method cannot train on (fewer than 2 images, a batch larger than the set;
  // for CoMCL no lesion or no healthy image, a batch larger than the lesion images, bad boxes) and
  // std::invalid_argument for a bad configuration. `roles` (lesion and healthy images, lesion boxes) is
  // used by CoMCL only.
  Pretrainer(const TrainingSet& set, const storage::ImageCache& cache, PretrainConfig config,
             std::string runDirectory, ComclRoles roles = {});
  const PretrainConfig& config() const { return config_; }
  // Runs (or resumes) until every epoch is done or `cancel` becomes true; cancel is honoured between steps
  // and leaves a checkpoint to resume from.
  PretrainResult run(const ProgressCallback& onProgress = {}, const std::atomic<bool>* cancel = nullptr,
                     const EpochMonitor& monitor = {});

 private:
  const TrainingSet& set_;
  const storage::ImageCache& cache_;
  PretrainConfig config_;
  std::string runDirectory_;
  ComclRoles roles_;
};

}  // namespace comcl::training
