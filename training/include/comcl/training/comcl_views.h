// CoMCL's training views (methods.md §2.2, docs/methods/comcl.md "Views and sampling"): which images a step
// uses and the patches cut from them, as batched tensor ops on the training device.
//
// Roles. Lesion images (labelled positive for the lesion label) give lesion patches around their lesion
// boxes; healthy images (labelled 0) give healthy patches at random positions. An image's quality flag says
// whether it is a real low-quality image (usable / reject); images without a flag count as high quality.
//
// Views of one step, B lesion samples and H = B * healthyPerLesion healthy samples:
//   V1      lesion patch: a P x P window that contains the sample's box (the authors' random shift), then
//           the view augmentation, resized to the view size;
//   V1'     a second window round the same box with its own shift and augmentation (L_les's positive);
//   V2      V1's window and augmentation on a degraded copy of the image (L_qual's anchor: the same box,
//           low quality);
//   V3      healthy patch of a high-quality healthy image (a key: the healthy queue's high-quality part);
//   V4      low-quality healthy patch: from a real low-quality healthy image with probability
//           realLowQualityShare when there are any, otherwise a healthy image's degraded copy;
//   I_HQ    the whole lesion image, augmented; I_LQ the same augmentation on its degraded copy (L_img).
// A lesion image without a box (every proposal filtered out) gets a random window, like a healthy patch.
// Window and augmentation are one affine resampling: the window only moves the augmentation's crop box.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "comcl/training/augment.h"
#include "comcl/training/dataset.h"
#include "comcl/training/degrade.h"

namespace comcl::training {

// A lesion box in the cached image's coordinates normalised to [0, 1] (x right, y down).
struct PatchBox {
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// Which images of a TrainingSet are lesion and healthy images, and the lesion boxes of each image.
struct ComclRoles {
  std::vector<int> lesionImages;
  std::vector<int> healthyImages;
  std::vector<std::vector<PatchBox>> boxes;  // per set image; empty: no box (random window)
  // Throws DataError with what to do: no lesion image (CoMCL needs some; MedAug needs none), no healthy
  // image, an index outside the set, an image in both roles, a box outside [0, 1] or empty.
  void validate(std::size_t setSize) const;
  // {"lesionImages": [...], "healthyImages": [...], "boxes": {"<image>": [[x0, y0, x1, y1], ...]}}: a run
  // keeps its roles (lesions.json) so that a resume uses exactly the same boxes.
  nlohmann::json toJson() const;
  static ComclRoles fromJson(const nlohmann::json& json, std::size_t setSize);  // DataError when malformed
};

// The views' augmentation (every view, patches and whole images, is outputSize x outputSize): crop scale
// [0.8, 1] of the window and aspect ratio [0.8, 1.25] (the authors' RandomResizedCrop 0.8-1.2, capped at the
// window), flip, rotation up to 10 degrees (the authors rotate fundus photographs by up to 180), brightness
// and contrast 0.4 with p 0.8, no blur (it would blur the quality difference away).
AugmentConfig comclAugment(int outputSize);

// Roles from a label alone, with no boxes (every lesion patch at a random position: the "no lesion boxes"
// setting, and the starting point lesion proposals fill in): images labelled > 0 are lesion images, images
// labelled 0 healthy. With `split` (patient key -> train / val / test), only "train" patients' images take
// a role, so held-out patients' labels never reach pre-training.
ComclRoles comclRolesFromLabels(const TrainingSet& set, const std::string& label,
                                const std::map<std::string, std::string>* split = nullptr);

struct ComclViewConfig {
  double patchFraction = 0.25;       // window side / cache side (the authors: 128 px patches at 512)
  int healthyPerLesion = 1;          // healthy patches per lesion sample (the authors: m // n)
  double realLowQualityShare = 0.5;  // V4 from real low-quality images, when the set has any
  DegradationConfig degradation = radiographDegradation();

  void validate() const;  // std::invalid_argument naming the field
  nlohmann::json toJson() const;
  static ComclViewConfig fromJson(const nlohmann::json& json);  // unknown keys and bad values throw
};

// What a step reads from the image cache (made on loader threads from a ComclStepPlan).
struct ComclStepImages {
  torch::Tensor lesionImages;      // float [B, C, S, S] in [0, 1]
  torch::Tensor lesionBoxes;       // float [B, 4] normalised x0, y0, x1, y1; all -1: no box
  torch::Tensor healthyImages;     // float [H, C, S, S]: V3 sources
  torch::Tensor lowQualityImages;  // float [H, C, S, S]: V4 sources
  torch::Tensor lowQualityIsReal;  // bool [H]: false = degrade a copy (synthetic V4)
};

// The images of one step: set indexes and which box of each lesion image.
struct ComclStepPlan {
  std::vector<int> lesion;
  std::vector<int> lesionBox;  // index into roles.boxes[lesion[i]], -1: none
  std::vector<int> healthy;
  std::vector<int> lowQuality;
  std::vector<bool> lowQualityIsReal;
};

// An epoch: every lesion image once as a lesion sample (shuffled; the last partial batch is dropped), each
// with a random one of its boxes, and healthy / low-quality healthy images drawn at random.
class ComclPlanner {
 public:
  ComclPlanner(const TrainingSet& set, const ComclRoles& roles, const ComclViewConfig& config, int batchSize);
  std::int64_t stepsPerEpoch() const;
  std::vector<ComclStepPlan> planEpoch(std::mt19937_64& rng) const;
  // Counts for summaries: lesion / healthy images by real quality.
  int lesionHighQuality() const { return lesionHigh_; }
  int lesionLowQuality() const { return lesionLow_; }
  int healthyHighQuality() const { return static_cast<int>(healthyHigh_.size()); }
  int healthyLowQuality() const { return static_cast<int>(healthyLow_.size()); }
  int lesionImagesWithoutBox() const { return withoutBox_; }

 private:
  const ComclRoles& roles_;
  ComclViewConfig config_;
  int batchSize_;
  std::vector<int> healthyHigh_, healthyLow_;
  int lesionHigh_ = 0, lesionLow_ = 0, withoutBox_ = 0;
};

// Whether an image's quality flag marks a real low-quality image (usable or reject).
bool isLowQuality(const TrainingImage& image);

// Reads a planned step's images with `channels` channels (0: the cache's; see loadHostBatch). Thread-safe:
// the cache is read-only here.
ComclStepImages loadComclStep(const TrainingSet& set, const storage::ImageCache& cache,
                              const ComclRoles& roles, const ComclStepPlan& plan, bool pin, int channels = 0);

// The views of a step, on the images' device, values in [0, 1] (not yet normalised).
struct ComclViews {
  torch::Tensor lesion;                           // V1   [B, C, V, V]
  torch::Tensor lesionSecond;                     // V1'
  torch::Tensor lowQualityLesion;                 // V2
  torch::Tensor healthy;                          // V3   [H, C, V, V]
  torch::Tensor lowQualityHealthy;                // V4
  torch::Tensor image;                            // I_HQ [B, C, V, V]
  torch::Tensor lowQualityImage;                  // I_LQ
  std::vector<DegradeParams> lesionDegradation;   // what each lesion image's degraded copy got
  std::vector<DegradeParams> healthyDegradation;  // per V4 sample; empty steps for real ones
};

class ComclViewMaker {
 public:
  ComclViewMaker(ComclViewConfig config, AugmentConfig augment);  // validates both
  const ComclViewConfig& config() const { return config_; }
  // Images on any device (float, [N, C, S, S]); `rng` draws windows, augmentations and degradations in a
  // fixed order (windows, V1, V1', I, lesion degradation, V3 windows, V3, V4 windows, V4, V4 degradation),
  // so a seed gives the same views on every run and (within float rounding) on CPU and CUDA.
  ComclViews operator()(const ComclStepImages& images, std::mt19937_64& rng) const;

 private:
  // Augmentation parameters of views cut from windows of side `window` at (left, top) in S x S images.
  ViewParams windowParams(const std::vector<double>& left, const std::vector<double>& top, double window,
                          int imageSize, std::mt19937_64& rng) const;

  ComclViewConfig config_;
  Augmenter augment_;
  Degrader degrade_;
};

// A picture of what CoMCL will train on, for a person to check before training (`comcl trainset`): one row
// per lesion sample of the first step of an epoch, one column per view, `gap` pixels of mid grey between.
struct ComclContactSheet {
  // float [rows * (V + gap) - gap, 8 * (V + gap) - gap, C] in [0, 1], CPU, C = the cache's channels
  // (interleaved like imaging::Image: grey radiographs, or RGB fundus photographs).
  torch::Tensor pixels;
  // Per row: the lesion image's resource id, its box (or null), what its degraded copy got, the healthy
  // images' resource ids and whether V4 is a real low-quality image or what degraded it.
  nlohmann::json rows = nlohmann::json::array();
  // "image and box", "V1 lesion", "V1' second window", "V2 low-quality lesion", "I_HQ image",
  // "I_LQ degraded image", "V3 healthy", "V4 low-quality healthy"
  static const std::vector<std::string>& columns();
};
// Throws DataError as ComclPlanner does (examples is the batch: 2..lesion images).
ComclContactSheet makeComclContactSheet(const TrainingSet& set, const storage::ImageCache& cache,
                                        const ComclRoles& roles, const ComclViewConfig& config,
                                        const AugmentConfig& augment, int examples, std::uint64_t seed,
                                        int gap = 2);

}  // namespace comcl::training
