// CoMCL's lesion proposals (methods.md §2.2): for every image of a TrainingSet, the lesion boxes that the
// CoMCL sampler crops lesion patches (views V1, V2) from. Images labelled positive for a finding are lesion
// images, images labelled 0 healthy images (healthy patches, V3, V4, are cropped at random from those).
//
// Three sources of boxes, all put through the authors' box filter (LesionFilter):
//   - Cam (default): class-activation maps of a small supervised ResNet trained first on the labelled images
//     of the training patients (our substitute for the authors' Faster R-CNN lesion detector, which needs
//     box annotations);
//   - Stored: boxes supplied with the labels and stored in the index (Index::putLesionBoxes,
//     `comcl import-boxes`);
//   - Detector: any TorchScript module that follows the contract written at LesionConfig::detectorPath.
//
// Coordinates: a LesionBox is in the CACHED image's coordinates, normalised to [0, 1] of the square cache
// image (x to the right, y down, edges of pixels: a box covering the whole cache image is 0, 0, 1, 1). The
// cache image is the original letterboxed into the square (InstanceRecord::contentX/Y/Width/Height say
// where), so the original image covers contentRectOf(record) and the padding lies outside it.
// docs/methods/comcl.md, "Lesion proposals", says which parts follow the authors and which are ours.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "comcl/training/dataset.h"
#include "comcl/training/evaluation.h"

namespace comcl::training {

// Lesion proposals cannot be made: boxes that do not fit their image, a detector that fails to load or
// returns the wrong shape, no lesion (or no healthy) images, a CAM model without both classes to learn
// from, a cancelled run. Bad configuration values throw std::invalid_argument naming the field instead.
class LesionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A box in the cached image's normalised coordinates (see the top of this file), x0 < x1, y0 < y1.
struct LesionBox {
  float x0 = 0;
  float y0 = 0;
  float x1 = 0;
  float y1 = 0;
  float confidence = 1;  // 0..1; 1 for stored boxes drawn by a reader
  float width() const { return x1 - x0; }
  float height() const { return y1 - y0; }
  nlohmann::json toJson() const;  // {"x0":..,"y0":..,"x1":..,"y1":..,"confidence":..}
};

// Where the original image lies inside the square cache image, normalised like a LesionBox.
struct ContentRect {
  float x0 = 0;
  float y0 = 0;
  float x1 = 1;
  float y1 = 1;
};
// From the record's contentX/Y/Width/Height and the cache side. Rows without a content rectangle (width or
// height 0) get the rectangle the cache's letterbox gives an image of cols x rows (the longer side fills the
// square, the other is centred), or the whole square when the size is unknown too.
ContentRect contentRectOf(const storage::InstanceRecord& record, int cacheSize);
// A box in the original image's pixels (0..cols, 0..rows) mapped into the cache image and normalised:
// x' = (contentX + x * contentWidth / cols) / cacheSize, likewise y. Throws LesionError when the box is not
// inside the image (negative, beyond cols/rows, x1 <= x0, y1 <= y0, not finite) or the size is unknown.
LesionBox toCacheBox(const storage::LesionBoxRecord& box, const storage::InstanceRecord& record,
                     int cacheSize);

enum class LesionSourceKind { Cam, Stored, Detector };
std::string toString(LesionSourceKind kind);                           // "cam" | "stored" | "detector"
LesionSourceKind lesionSourceKindFromString(const std::string& text);  // std::invalid_argument otherwise

// The authors' box filter (CoMCL's `build_dataset.py`, on EyePACS at 512 x 512): keep boxes with w, h <= 128
// px, at least 5 px from the border and confidence > 0.5. Sizes and margins here are fractions of the side
// of the square cache image, so that the rule means the same at every cache size.
struct LesionFilter {
  double maxSideFraction = 0.25;              // 128 / 512: drop a box wider or taller than this
  double minSideFraction = 0.0;               // drop a box narrower or shorter than this (ours; 0 = off)
  double borderMarginFraction = 5.0 / 512.0;  // drop a box closer than this to the image's border
  double minConfidence = 0.5;                 // keep only confidence > minConfidence

  void validate() const;  // std::invalid_argument naming the field: fractions in [0, 1], min <= max
  nlohmann::json toJson() const;
  static LesionFilter fromJson(const nlohmann::json& json);  // unknown keys and bad values throw

  // Why the box is dropped, or "" when it is kept. The reasons, checked in this order:
  //   "outside image"   a corner lies outside `content` (the original image inside the cache square) by
  //                     more than 1e-4, or a coordinate is not finite (a box within 1e-4 is judged, and
  //                     kept by proposeLesions, moved onto the image's edge);
  //   "empty"           x1 <= x0 or y1 <= y0;
  //   "low confidence"  confidence <= minConfidence;
  //   "too large"       width or height > maxSideFraction;
  //   "too small"       width or height < minSideFraction;
  //   "near border"     closer than borderMarginFraction to an edge of `content` (the image's own border,
  //                     not the padding's).
  std::string rejects(const LesionBox& box, const ContentRect& content = {}) const;
};

struct LesionConfig {
  // The finding whose positive images (label value > 0; graded labels count every grade above 0) are lesion
  // images; images labelled exactly 0 are healthy images; uncertain (-1) and unlabelled images are neither.
  std::string label;
  LesionSourceKind source = LesionSourceKind::Cam;

  // --- Detector: a TorchScript file (torch::jit::save / torch.jit.save). Contract:
  //   input   forward(images): float32 [B, C, S, S] on the configured device, values in [0, 1], not
  //           normalised (a detector normalises itself, as torchvision's detection models do); the cache
  //           image (letterboxed, padding black) resized bilinearly to S = detectorImageSize, grey
  //           replicated to C = detectorChannels channels; B <= batchSize;
  //   output  either a Tensor [B, M, 5] or a List[Tensor] of B tensors [M_i, 5]; each row is
  //           (x0, y0, x1, y1, score) in the input's pixels (0..S), score in [0, 1]; rows with score <= 0 are
  //           padding and ignored. Anything else (another type, rank, last dimension, batch size, a value
  //           that is NaN or infinite) throws LesionError naming the shape received and the shape expected.
  std::string detectorPath;
  int detectorImageSize = 512;  // the authors ran their detector on 512 x 512 images
  int detectorChannels = 3;     // 1 or 3

  LesionFilter filter;

  // --- Cam: a supervised ResNet (torchvision layout, one logit) trained on the labelled images of
  // `label` whose patient is in the split's "train" part, then class-activation maps of the lesion images:
  // CAM = ReLU(sum_c w_c F_c) over the last block's feature maps F_c with the logit's weights w_c,
  // upsampled bilinearly to camImageSize with cell j at the centre of its receptive field (input pixel
  // 32 j), zero outside the image (padding), divided by its maximum.
  // Boxes are the bounding boxes of the 8-connected regions >= camThreshold (see camShrinkToMaxSide); a
  // box's confidence is the region's peak (<= 1) times the model's predicted probability for the image.
  std::string camArchitecture = "resnet18";
  std::string camEncoder;  // optional pre-trained encoder directory (encoder_file.h) to start from;
                           // empty: random initialisation. Its architecture and normalisation are used.
  int camImageSize = 224;  // 7 x 7 last-block maps (a cell is 1/7 of the image; 1/4 at 128 px)
  int camEpochs = 5;
  double camLearningRate = 1e-3;  // Adam; the positive class is weighted by negatives / positives
  double camWeightDecay = 1e-4;
  double camThreshold = 0.5;  // fraction of the map's maximum
  // A CAM region wider or taller than filter.maxSideFraction gives a box of that side (in that direction)
  // centred on the region's CAM-weighted centroid, inside the region: a map cell is large (1/7 of the image
  // at 224 px) and regions span a few cells whatever the lesion's size, so the centroid is the location the
  // map knows. false: the region's bounding box, which the filter then drops as "too large".
  bool camShrinkToMaxSide = true;

  // Cam and Detector: at most this many boxes per image survive, highest confidence first, after the
  // filter (0: no limit). Stored boxes are never capped.
  int maxBoxesPerImage = 4;
  int batchSize = 16;  // CAM training and inference, detector batches
  // Lesion and healthy images only from patients in the split's "train" part (the stored patient split,
  // completed with `split` for patients that have none, as ensurePatientSplit does): held-out patients'
  // labels then never influence pre-training. false: every labelled image (the CAM model still trains on
  // training patients only).
  bool trainPatientsOnly = true;
  SplitConfig split;
  std::string device = "auto";  // parseDevice()
  std::uint64_t seed = 0;       // CAM initialisation and shuffling; CPU runs repeat exactly for a seed

  void validate() const;  // std::invalid_argument naming the field (label empty, sizes, fractions, ...)
  nlohmann::json toJson() const;
  static LesionConfig fromJson(const nlohmann::json& json);  // unknown keys and bad values throw
};

struct LesionProposals {
  // Per TrainingSet image index: the kept boxes (filtered, confidence descending for Cam and Detector,
  // stored order for Stored); empty for healthy, unlabelled and held-out images.
  std::vector<std::vector<LesionBox>> boxes;
  std::vector<int> lesionImages;   // indexes of images labelled positive for the label (ascending)
  std::vector<int> healthyImages;  // indexes of images labelled 0 (ascending)
  int proposed = 0;                // boxes before filtering (lesion images only)
  int kept = 0;                    // boxes after filtering and the per-image limit
  // reason -> count: the LesionFilter reasons, "over the per-image limit" (maxBoxesPerImage), and for
  // Stored "not a lesion image" (a stored box on an image not labelled positive) and "held-out patient"
  // (on a positive image of a patient outside the split's "train" part, with trainPatientsOnly).
  std::map<std::string, int> dropped;
  // Lesion images whose every box was dropped (or that had none). The caller should still use them as
  // lesion images and crop their lesion patches at a random position of the image (no box to centre
  // on), as CoMCL crops healthy patches; dropping them would bias the lesion set towards the lesions the
  // source finds easily.
  int lesionImagesWithoutBox = 0;
  std::string source;  // "cam" | "stored" | "detector"
  std::string label;
  // Source details: the CAM model (architecture, image size, training images and positives, epochs, final
  // loss, boxes shrunk), the detector's path, stored boxes on images outside the set, the split's id.
  nlohmann::json details = nlohmann::json::object();

  // {"source", "label", "lesionImages", "healthyImages", "proposed", "kept", "dropped",
  //  "lesionImagesWithoutBox", "boxesPerLesionImage", "details"} (counts, not the boxes).
  nlohmann::json summary() const;
};

// Makes the proposals. Throws LesionError with a clear message when no image is labelled positive for
// config.label ("CoMCL needs some images labelled positive for '<label>' (lesion images); none of the N
// images has one. Label some, or pre-train with --method medaug, which needs no labels."), when none is
// labelled 0 (healthy images) likewise, for the source's own failures (see LesionConfig) and when `cancel`
// becomes true ("lesion proposals cancelled"). May assign patients without a split one in the index
// (trainPatientsOnly, and always for Cam). Nothing is returned half-made: on any error no proposals exist.
LesionProposals proposeLesions(storage::Index& index, const TrainingSet& set,
                               const storage::ImageCache& cache, const LesionConfig& config,
                               const std::function<void(const std::string&)>& progress = {},
                               const std::atomic<bool>* cancel = nullptr);

struct ComclRoles;  // comcl_views.h
// The roles CoMCL's views take (comcl_views.h): the same lesion and healthy images, and every kept box
// (confidences dropped; a lesion image without a box gets random windows there).
ComclRoles toComclRoles(const LesionProposals& proposals);

// --- boxes from a CSV file (comcl import-boxes)

// Columns (header names, any order; others are ignored):
//   resource_id | sop_instance_uid | file   which image: the first of these the header has is used. `file`
//                                           matches an index row whose source path ends with it (whole
//                                           path components), as `comcl import-labels` matches manifests;
//   x0, y0, x1, y1                          the box in the original image's pixels (0..cols, 0..rows);
//   confidence                              optional, 0..1, empty = 1;
//   finding                                 optional; an empty cell or no column: options.finding.
struct BoxImportOptions {
  std::string finding;  // default finding
  std::string source;   // stored as the boxes' source; empty: "boxes:<file name>"
};

struct BoxImportFailure {
  std::size_t row = 0;   // 1-based data row (the header is not counted)
  std::size_t line = 0;  // 1-based line of the file where the row starts
  std::string reason;
};

struct BoxImportReport {
  std::string path;
  std::string matchColumn;  // resource_id | sop_instance_uid | file
  std::string source;
  std::size_t rows = 0;     // data rows, good or bad
  std::int64_t stored = 0;  // boxes written
  std::int64_t images = 0;  // distinct images that received boxes
  std::map<std::string, std::int64_t> byFinding;
  std::vector<BoxImportFailure> failures;  // bad rows, each skipped: the others are stored
};

// Stores the good rows' boxes in one Index::putLesionBoxes (for each image, finding and source, the boxes
// of the file replace those stored before, so importing a file twice stores it once). Bad rows (unknown or
// ambiguous image, a non-numeric or missing coordinate, a box outside its image, a confidence outside 0..1,
// no finding, a ragged row) are reported row by row and skipped. Throws LesionError when the file cannot be
// read or lacks the image column or a coordinate column.
BoxImportReport importLesionBoxes(storage::Index& index, const std::string& csvPath,
                                  const BoxImportOptions& options);
// The same from CSV text (`name` stands for the path in the report and the default source).
BoxImportReport importLesionBoxesText(storage::Index& index, const std::string& csvText,
                                      const std::string& name, const BoxImportOptions& options);

}  // namespace comcl::training
