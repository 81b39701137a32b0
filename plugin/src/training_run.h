// One retraining run of the plugin (POST /comcl/train, issue 6), without Orthanc: snapshot the index, use
// the stored patient-level split, pre-train (MoCo v2 / MedAug / CoMCL, or none for supervised-only), fit the
// heads and evaluate them on the held-out patients, write the next model version into the registry as a
// candidate. TrainingService runs it on a thread of its own and records it; an Orthanc job watches it.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "study_labels.h"

namespace comcl::plugin {

struct TrainRequest {
  std::string method = "medaug";  // medaug | moco | comcl | supervised
  std::string strategy;           // MedAug's pairs; empty: the method's default
  int epochs = 10;
  int imageSize = 128;
  int batchSize = 16;
  // Labels evaluated (AUC for binary, kappa for graded); the model scores the binary ones. Empty: every
  // declared label.
  std::vector<std::string> labels;
  bool labelsDefaulted = false;  // labels not given: those no image carries are left out of the run
  std::string lesionLabel;       // comcl: lesion images are its positives; empty: the first binary label
  // comcl: where the lesion boxes come from: "stored" (given with the labels), "cam" (class-activation maps
  // of a supervised network), "none" (random windows); "auto": stored when the lesion label has boxes, else
  // none.
  std::string lesionSource = "auto";
  std::string device = "auto";
  std::uint64_t seed = 0;
  std::string requestedBy;  // the user who asked ("" without one)

  // The POST body: every field optional ("Method", "Strategy", "Epochs", "ImageSize", "BatchSize",
  // "Labels", "LesionLabel", "LesionSource", "Device", "Seed"). Throws std::invalid_argument naming the field
  // for an unknown field, a wrong type, a value out of range or a label not declared as binary in `declared`.
  static TrainRequest fromJson(const nlohmann::json& body, const LabelSet& declared);
  nlohmann::json toJson() const;
};

struct TrainProgress {
  std::string stage;    // snapshot | lesions (comcl) | pre-train | heads | register
  double fraction = 0;  // of the whole run, 0..1
  int epoch = 0, epochs = 0;
  double loss = 0;       // of the last step
  double epochLoss = 0;  // mean over the epoch so far
  double imagesPerSecond = 0;
};

struct TrainOutcome {
  int modelVersion = 0;
  std::string modelDirectory;
  nlohmann::json metrics;  // the held-out evaluation (ProtocolResult::toJson)
  nlohmann::json stageSeconds = nlohmann::json::object();
  std::vector<double> epochLosses;  // pre-training's mean loss per epoch (none for supervised-only)
  double imagesPerSecond = 0;       // pre-training's throughput
  // comcl: {"Label", "Source", "LesionImages", "HealthyImages"} and, with boxes, "BoxesProposed",
  // "BoxesKept", "BoxesDropped" (reason -> count), "LesionImagesWithoutBox"; null for the other methods.
  nlohmann::json lesions;
};

// Runs the whole training. `runDirectory` holds the pre-training checkpoints (a rerun resumes them). Throws
// training::DataError / TrainingError with what is wrong (no labelled images, ...), and DataError
// "cancelled" when `cancel` became true; nothing is registered then.
TrainOutcome runTraining(const TrainRequest& request, storage::Index& index, const storage::ImageCache& cache,
                         const std::string& modelDirectory, const std::string& runDirectory,
                         std::int64_t runId, const std::function<void(const TrainProgress&)>& progress,
                         const std::atomic<bool>* cancel);

}  // namespace comcl::plugin
