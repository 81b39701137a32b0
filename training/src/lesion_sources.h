// The box sources behind proposeLesions (internal to comcl_training): each returns the candidate boxes of
// the lesion images, before the filter and the per-image limit.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "comcl/training/dataset.h"
#include "comcl/training/lesions.h"

namespace comcl::training::detail {

struct LesionRun {
  const TrainingSet& set;
  const storage::ImageCache& cache;
  const LesionConfig& config;
  torch::Device device;
  std::vector<ContentRect> content;  // per set image
  const std::function<void(const std::string&)>& progress;
  const std::atomic<bool>* cancel;

  void report(const std::string& message) const {
    if (progress)
      progress(message);
  }
  void checkCancel() const {
    if (cancel && cancel->load())
      throw LesionError("lesion proposals cancelled");
  }
};

// Why the box (original pixels) does not fit an image of cols x rows, or "" when it does.
std::string boxOutsideImage(double x0, double y0, double x1, double y1, std::int64_t cols, std::int64_t rows);

// Candidates of each image in `images` (same order), from the TorchScript detector at config.detectorPath.
std::vector<std::vector<LesionBox>> detectorCandidates(const LesionRun& run, const std::vector<int>& images,
                                                       nlohmann::json& details);

// Trains the CAM model on `trainImages` (targets 0/1) and returns the CAM candidates of each image in
// `images` (same order).
std::vector<std::vector<LesionBox>> camCandidates(const LesionRun& run, const std::vector<int>& images,
                                                  const std::vector<int>& trainImages,
                                                  const std::vector<int>& trainTargets,
                                                  nlohmann::json& details);

}  // namespace comcl::training::detail
