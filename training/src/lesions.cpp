#include "comcl/training/lesions.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <utility>

#include "comcl/training/comcl_views.h"
#include "comcl/training/device.h"
#include "lesion_sources.h"

namespace comcl::training {

namespace {

[[noreturn]] void invalid(const std::string& subject, const std::string& field, const std::string& why) {
  throw std::invalid_argument(subject + " " + field + " " + why);
}

std::string numberText(double value) {
  std::ostringstream text;
  text << value;
  return text.str();
}

void requireFraction(const std::string& subject, const std::string& field, double value) {
  if (!(value >= 0 && value <= 1))
    invalid(subject, field, "must be in [0, 1], not " + numberText(value));
}

void requireAtLeast(const std::string& subject, const std::string& field, int value, int least) {
  if (value < least)
    invalid(subject, field, "must be at least " + std::to_string(least) + ", not " + std::to_string(value));
}

// Reads one JSON value into a field, naming the key on a type mismatch.
template <typename T>
T read(const std::string& subject, const std::string& key, const nlohmann::json& value) {
  if constexpr (std::is_same_v<T, bool>) {
    if (!value.is_boolean())
      invalid(subject, key, "must be true or false, not " + value.dump());
  } else if constexpr (std::is_same_v<T, std::string>) {
    if (!value.is_string())
      invalid(subject, key, "must be a string, not " + value.dump());
  } else if constexpr (std::is_integral_v<T>) {
    if (!value.is_number_integer())
      invalid(subject, key, "must be an integer, not " + value.dump());
    if (std::is_unsigned_v<T> && value.is_number_integer() && !value.is_number_unsigned())
      invalid(subject, key, "must not be negative, not " + value.dump());
    if (!std::is_unsigned_v<T> && (value.get<double>() > std::numeric_limits<int>::max() ||
                                   value.get<double>() < std::numeric_limits<int>::min()))
      invalid(subject, key, "is out of range: " + value.dump());
  } else {
    if (!value.is_number())
      invalid(subject, key, "must be a number, not " + value.dump());
  }
  return value.get<T>();
}

void requireObject(const std::string& subject, const nlohmann::json& json) {
  if (!json.is_object())
    throw std::invalid_argument(subject + " must be a JSON object, not " + json.dump());
}

const std::string kFilter = "lesion filter";
const std::string kConfig = "lesion config";

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Boxes and coordinates

nlohmann::json LesionBox::toJson() const {
  return {{"x0", x0}, {"y0", y0}, {"x1", x1}, {"y1", y1}, {"confidence", confidence}};
}

ContentRect contentRectOf(const storage::InstanceRecord& record, int cacheSize) {
  if (cacheSize <= 0)
    throw std::invalid_argument("cache size must be positive, not " + std::to_string(cacheSize));
  int x = record.contentX, y = record.contentY, width = record.contentWidth, height = record.contentHeight;
  if (width <= 0 || height <= 0) {
    if (record.cols <= 0 || record.rows <= 0)
      return {};
    // The cache's letterbox (imaging/src/resize.cpp): the longer side fills the square, the other is
    // scaled and centred.
    const int longer = std::max(record.cols, record.rows);
    auto fit = [&](int length) {
      if (length == longer)
        return cacheSize;
      const long scaled = std::lround(static_cast<double>(length) * cacheSize / longer);
      return static_cast<int>(std::clamp(scaled, 1L, static_cast<long>(cacheSize)));
    };
    width = fit(record.cols);
    height = fit(record.rows);
    x = (cacheSize - width) / 2;
    y = (cacheSize - height) / 2;
  }
  const auto side = static_cast<float>(cacheSize);
  return {static_cast<float>(x) / side, static_cast<float>(y) / side, static_cast<float>(x + width) / side,
          static_cast<float>(y + height) / side};
}

namespace detail {

std::string boxOutsideImage(double x0, double y0, double x1, double y1, std::int64_t cols,
                            std::int64_t rows) {
  if (cols <= 0 || rows <= 0)
    return "the image's size is unknown";
  std::ostringstream why;
  if (!(std::isfinite(x0) && std::isfinite(y0) && std::isfinite(x1) && std::isfinite(y1)))
    why << "a coordinate is not a finite number";
  else if (x0 < 0 || y0 < 0 || x1 > static_cast<double>(cols) || y1 > static_cast<double>(rows) || x1 <= x0 ||
           y1 <= y0)
    why << "box (" << x0 << ", " << y0 << ", " << x1 << ", " << y1 << ") is outside the image of " << cols
        << "x" << rows << " pixels (needs 0 <= x0 < x1 <= " << cols << " and 0 <= y0 < y1 <= " << rows << ")";
  return why.str();
}

}  // namespace detail

LesionBox toCacheBox(const storage::LesionBoxRecord& box, const storage::InstanceRecord& record,
                     int cacheSize) {
  const std::string problem =
      detail::boxOutsideImage(box.x0, box.y0, box.x1, box.y1, record.cols, record.rows);
  if (!problem.empty())
    throw LesionError("lesion box of '" + box.finding + "' on instance " + record.resourceId + ": " +
                      problem);
  const ContentRect c = contentRectOf(record, cacheSize);
  const double sx = static_cast<double>(c.x1 - c.x0) / record.cols;
  const double sy = static_cast<double>(c.y1 - c.y0) / record.rows;
  LesionBox out;
  out.x0 = static_cast<float>(c.x0 + box.x0 * sx);
  out.y0 = static_cast<float>(c.y0 + box.y0 * sy);
  out.x1 = static_cast<float>(c.x0 + box.x1 * sx);
  out.y1 = static_cast<float>(c.y0 + box.y1 * sy);
  out.confidence = static_cast<float>(box.confidence);
  return out;
}

std::string toString(LesionSourceKind kind) {
  switch (kind) {
    case LesionSourceKind::Cam:
      return "cam";
    case LesionSourceKind::Stored:
      return "stored";
    case LesionSourceKind::Detector:
      return "detector";
  }
  return "cam";
}

LesionSourceKind lesionSourceKindFromString(const std::string& text) {
  for (LesionSourceKind kind : {LesionSourceKind::Cam, LesionSourceKind::Stored, LesionSourceKind::Detector})
    if (toString(kind) == text)
      return kind;
  throw std::invalid_argument("lesion source must be cam, stored or detector, not \"" + text + "\"");
}

// ---------------------------------------------------------------------------------------------------------
// Filter

void LesionFilter::validate() const {
  requireFraction(kFilter, "maxSideFraction", maxSideFraction);
  requireFraction(kFilter, "minSideFraction", minSideFraction);
  requireFraction(kFilter, "borderMarginFraction", borderMarginFraction);
  requireFraction(kFilter, "minConfidence", minConfidence);
  if (minSideFraction > maxSideFraction)
    invalid(kFilter, "minSideFraction",
            "must not exceed maxSideFraction (" + numberText(minSideFraction) + " > " +
                numberText(maxSideFraction) + ")");
}

nlohmann::json LesionFilter::toJson() const {
  return {{"maxSideFraction", maxSideFraction},
          {"minSideFraction", minSideFraction},
          {"borderMarginFraction", borderMarginFraction},
          {"minConfidence", minConfidence}};
}

LesionFilter LesionFilter::fromJson(const nlohmann::json& json) {
  requireObject(kFilter, json);
  LesionFilter filter;
  for (const auto& [key, value] : json.items()) {
    if (key == "maxSideFraction")
      filter.maxSideFraction = read<double>(kFilter, key, value);
    else if (key == "minSideFraction")
      filter.minSideFraction = read<double>(kFilter, key, value);
    else if (key == "borderMarginFraction")
      filter.borderMarginFraction = read<double>(kFilter, key, value);
    else if (key == "minConfidence")
      filter.minConfidence = read<double>(kFilter, key, value);
    else
      throw std::invalid_argument(kFilter + " has an unknown key \"" + key + "\"");
  }
  filter.validate();
  return filter;
}

namespace {

// A box that the filter let overshoot the image by up to its slack, moved onto the image's edges.
LesionBox clampedTo(LesionBox box, const ContentRect& content) {
  box.x0 = std::max(box.x0, content.x0);
  box.y0 = std::max(box.y0, content.y0);
  box.x1 = std::min(box.x1, content.x1);
  box.y1 = std::min(box.y1, content.y1);
  return box;
}

}  // namespace

std::string LesionFilter::rejects(const LesionBox& original, const ContentRect& content) const {
  constexpr float kSlack = 1e-4F;  // float rounding of boxes that end exactly on the image's edge
  const bool finite = std::isfinite(original.x0) && std::isfinite(original.y0) &&
                      std::isfinite(original.x1) && std::isfinite(original.y1);
  if (!finite || original.x0 < content.x0 - kSlack || original.y0 < content.y0 - kSlack ||
      original.x1 > content.x1 + kSlack || original.y1 > content.y1 + kSlack)
    return "outside image";
  const LesionBox box = clampedTo(original, content);  // the rest judge the box as it will be kept
  if (box.x1 <= box.x0 || box.y1 <= box.y0)
    return "empty";
  if (!(static_cast<double>(box.confidence) > minConfidence))
    return "low confidence";
  const double width = static_cast<double>(box.x1) - box.x0;
  const double height = static_cast<double>(box.y1) - box.y0;
  if (width > maxSideFraction + 1e-6 || height > maxSideFraction + 1e-6)
    return "too large";
  if (width < minSideFraction - 1e-6 || height < minSideFraction - 1e-6)
    return "too small";
  const double margin = borderMarginFraction - 1e-6;
  if (box.x0 - content.x0 < margin || box.y0 - content.y0 < margin || content.x1 - box.x1 < margin ||
      content.y1 - box.y1 < margin)
    return "near border";
  return "";
}

// ---------------------------------------------------------------------------------------------------------
// Config

void LesionConfig::validate() const {
  if (label.empty())
    invalid(kConfig, "label", "is empty: name the finding whose positive images are lesion images");
  if (source == LesionSourceKind::Detector && detectorPath.empty())
    invalid(kConfig, "detectorPath", "is empty: the detector source needs a TorchScript file");
  requireAtLeast(kConfig, "detectorImageSize", detectorImageSize, 1);
  if (detectorChannels != 1 && detectorChannels != 3)
    invalid(kConfig, "detectorChannels", "must be 1 or 3, not " + std::to_string(detectorChannels));
  filter.validate();
  if (camArchitecture != "resnet18" && camArchitecture != "resnet50")
    invalid(kConfig, "camArchitecture", "must be resnet18 or resnet50, not \"" + camArchitecture + "\"");
  requireAtLeast(kConfig, "camImageSize", camImageSize, 32);
  requireAtLeast(kConfig, "camEpochs", camEpochs, 1);
  if (!(camLearningRate > 0 && std::isfinite(camLearningRate)))
    invalid(kConfig, "camLearningRate", "must be a positive number, not " + numberText(camLearningRate));
  if (!(camWeightDecay >= 0 && std::isfinite(camWeightDecay)))
    invalid(kConfig, "camWeightDecay", "must be at least 0, not " + numberText(camWeightDecay));
  if (!(camThreshold > 0 && camThreshold <= 1))
    invalid(kConfig, "camThreshold", "must be in (0, 1], not " + numberText(camThreshold));
  requireAtLeast(kConfig, "maxBoxesPerImage", maxBoxesPerImage, 0);
  requireAtLeast(kConfig, "batchSize", batchSize, 2);
  if (!(split.trainFraction > 0 && split.valFraction >= 0 && split.trainFraction + split.valFraction < 1))
    invalid(kConfig, "split", "fractions must leave room for a test split (train > 0, val >= 0, sum < 1)");
  parseDevice(device);  // std::invalid_argument naming the text
}

nlohmann::json LesionConfig::toJson() const {
  return {
      {"label", label},
      {"source", toString(source)},
      {"detectorPath", detectorPath},
      {"detectorImageSize", detectorImageSize},
      {"detectorChannels", detectorChannels},
      {"filter", filter.toJson()},
      {"camArchitecture", camArchitecture},
      {"camEncoder", camEncoder},
      {"camImageSize", camImageSize},
      {"camEpochs", camEpochs},
      {"camLearningRate", camLearningRate},
      {"camWeightDecay", camWeightDecay},
      {"camThreshold", camThreshold},
      {"camShrinkToMaxSide", camShrinkToMaxSide},
      {"maxBoxesPerImage", maxBoxesPerImage},
      {"batchSize", batchSize},
      {"trainPatientsOnly", trainPatientsOnly},
      {"split",
       {{"trainFraction", split.trainFraction}, {"valFraction", split.valFraction}, {"seed", split.seed}}},
      {"device", device},
      {"seed", seed}};
}

LesionConfig LesionConfig::fromJson(const nlohmann::json& json) {
  requireObject(kConfig, json);
  LesionConfig c;
  for (const auto& [key, value] : json.items()) {
    if (key == "label")
      c.label = read<std::string>(kConfig, key, value);
    else if (key == "source")
      c.source = lesionSourceKindFromString(read<std::string>(kConfig, key, value));
    else if (key == "detectorPath")
      c.detectorPath = read<std::string>(kConfig, key, value);
    else if (key == "detectorImageSize")
      c.detectorImageSize = read<int>(kConfig, key, value);
    else if (key == "detectorChannels")
      c.detectorChannels = read<int>(kConfig, key, value);
    else if (key == "filter")
      c.filter = LesionFilter::fromJson(value);
    else if (key == "camArchitecture")
      c.camArchitecture = read<std::string>(kConfig, key, value);
    else if (key == "camEncoder")
      c.camEncoder = read<std::string>(kConfig, key, value);
    else if (key == "camImageSize")
      c.camImageSize = read<int>(kConfig, key, value);
    else if (key == "camEpochs")
      c.camEpochs = read<int>(kConfig, key, value);
    else if (key == "camLearningRate")
      c.camLearningRate = read<double>(kConfig, key, value);
    else if (key == "camWeightDecay")
      c.camWeightDecay = read<double>(kConfig, key, value);
    else if (key == "camThreshold")
      c.camThreshold = read<double>(kConfig, key, value);
    else if (key == "camShrinkToMaxSide")
      c.camShrinkToMaxSide = read<bool>(kConfig, key, value);
    else if (key == "maxBoxesPerImage")
      c.maxBoxesPerImage = read<int>(kConfig, key, value);
    else if (key == "batchSize")
      c.batchSize = read<int>(kConfig, key, value);
    else if (key == "trainPatientsOnly")
      c.trainPatientsOnly = read<bool>(kConfig, key, value);
    else if (key == "split") {
      requireObject(kConfig + " split", value);
      for (const auto& [splitKey, splitValue] : value.items()) {
        if (splitKey == "trainFraction")
          c.split.trainFraction = read<double>(kConfig, "split.trainFraction", splitValue);
        else if (splitKey == "valFraction")
          c.split.valFraction = read<double>(kConfig, "split.valFraction", splitValue);
        else if (splitKey == "seed")
          c.split.seed = read<std::uint64_t>(kConfig, "split.seed", splitValue);
        else
          throw std::invalid_argument(kConfig + " split has an unknown key \"" + splitKey + "\"");
      }
    } else if (key == "device")
      c.device = read<std::string>(kConfig, key, value);
    else if (key == "seed")
      c.seed = read<std::uint64_t>(kConfig, key, value);
    else
      throw std::invalid_argument(kConfig + " has an unknown key \"" + key + "\"");
  }
  c.validate();
  return c;
}

nlohmann::json LesionProposals::summary() const {
  nlohmann::json perImage = nlohmann::json::object();  // boxes kept -> lesion images with that many
  for (int image : lesionImages)
    perImage[std::to_string(boxes[static_cast<std::size_t>(image)].size())] =
        perImage.value(std::to_string(boxes[static_cast<std::size_t>(image)].size()), 0) + 1;
  return {{"source", source},
          {"label", label},
          {"lesionImages", lesionImages.size()},
          {"healthyImages", healthyImages.size()},
          {"proposed", proposed},
          {"kept", kept},
          {"dropped", dropped},
          {"lesionImagesWithoutBox", lesionImagesWithoutBox},
          {"boxesPerLesionImage", perImage},
          {"details", details}};
}

// ---------------------------------------------------------------------------------------------------------
// Proposals

namespace {

const char* const kOverLimit = "over the per-image limit";

std::string imagesText(std::size_t count) {
  return std::to_string(count) + (count == 1 ? " image" : " images");
}

// Candidates of one lesion image through the filter and the limit, into `out`.
void keep(LesionProposals& out, int image, std::vector<LesionBox> candidates, const ContentRect& content,
          const LesionConfig& config, bool rankAndLimit) {
  out.proposed += static_cast<int>(candidates.size());
  std::vector<LesionBox> kept;
  for (const LesionBox& box : candidates) {
    const std::string reason = config.filter.rejects(box, content);
    if (reason.empty())
      kept.push_back(clampedTo(box, content));  // a box overshooting by rounding ends on the image's edge
    else
      ++out.dropped[reason];
  }
  if (rankAndLimit) {
    std::stable_sort(kept.begin(), kept.end(),
                     [](const LesionBox& a, const LesionBox& b) { return a.confidence > b.confidence; });
    const auto limit = static_cast<std::size_t>(config.maxBoxesPerImage);
    if (limit > 0 && kept.size() > limit) {
      out.dropped[kOverLimit] += static_cast<int>(kept.size() - limit);
      kept.resize(limit);
    }
  }
  out.kept += static_cast<int>(kept.size());
  if (kept.empty())
    ++out.lesionImagesWithoutBox;
  out.boxes[static_cast<std::size_t>(image)] = std::move(kept);
}

}  // namespace

LesionProposals proposeLesions(storage::Index& index, const TrainingSet& set,
                               const storage::ImageCache& cache, const LesionConfig& config,
                               const std::function<void(const std::string&)>& progress,
                               const std::atomic<bool>* cancel) {
  config.validate();
  const std::string& label = config.label;
  const int cacheSize = cache.format().size;

  // Who is a training patient (the stored split, completed as the evaluation protocol does).
  const bool needSplit = config.trainPatientsOnly || config.source == LesionSourceKind::Cam;
  std::map<std::string, std::string> split;
  if (needSplit)
    split = ensurePatientSplit(index, set, config.split);
  auto isTrainPatient = [&](std::size_t image) {
    const auto it = split.find(set.patientKeys()[static_cast<std::size_t>(set.images()[image].patient)]);
    return it != split.end() && it->second == "train";
  };

  LesionProposals out;
  out.source = toString(config.source);
  out.label = label;
  out.boxes.assign(set.size(), {});
  std::vector<int> trainImages, trainTargets;  // the CAM model's: labelled images of training patients
  std::size_t positives = 0, negatives = 0, heldOutPositives = 0, heldOutNegatives = 0;
  std::vector<bool> heldOut(set.size(), false);
  for (std::size_t i = 0; i < set.size(); ++i) {
    const std::optional<double> value = set.label(i, label);
    if (!value || !(*value >= 0))
      continue;  // unlabelled or uncertain
    const bool positive = *value > 0;
    const bool train = needSplit && isTrainPatient(i);
    if (needSplit && train) {
      trainImages.push_back(static_cast<int>(i));
      trainTargets.push_back(positive ? 1 : 0);
    }
    (positive ? positives : negatives) += 1;
    if (config.trainPatientsOnly && !train) {
      heldOut[i] = true;
      (positive ? heldOutPositives : heldOutNegatives) += 1;
      continue;
    }
    (positive ? out.lesionImages : out.healthyImages).push_back(static_cast<int>(i));
  }

  const std::string fallback = " Label some, or pre-train with --method medaug, which needs no labels.";
  if (positives == 0) {
    throw LesionError("CoMCL needs some images labelled positive for '" + label +
                      "' (lesion images); none of the " + std::to_string(set.size()) + " images has one." +
                      fallback);
  }
  if (negatives == 0) {
    throw LesionError("CoMCL needs some images labelled 0 for '" + label +
                      "' (healthy images, the source of its negatives); none of the " +
                      std::to_string(set.size()) + " images has one." + fallback);
  }
  if (out.lesionImages.empty() || out.healthyImages.empty()) {
    const bool noLesion = out.lesionImages.empty();
    throw LesionError("CoMCL needs some images labelled " + std::string(noLesion ? "positive" : "0") +
                      " for '" + label + "' (" + (noLesion ? "lesion" : "healthy") +
                      " images) among the training patients; the " +
                      imagesText(noLesion ? heldOutPositives : heldOutNegatives) + " labelled " +
                      (noLesion ? "positive" : "0") +
                      " all belong to held-out (val/test) patients of the stored patient split. Label some "
                      "training patients' images, set trainPatientsOnly to false, or pre-train with --method "
                      "medaug, which needs no labels.");
  }

  // Where each image lies inside its cache square.
  std::vector<ContentRect> content(set.size());
  {
    std::unordered_map<std::int64_t, storage::InstanceRecord> records;
    for (storage::InstanceRecord& r : index.decodedInstances())
      records.emplace(r.id, std::move(r));
    for (std::size_t i = 0; i < set.size(); ++i) {
      auto it = records.find(set.images()[i].instanceId);
      if (it != records.end())
        content[i] = contentRectOf(it->second, cacheSize);
    }
    if (config.source == LesionSourceKind::Stored) {
      std::unordered_map<std::int64_t, std::size_t> imageOf;
      for (std::size_t i = 0; i < set.size(); ++i)
        imageOf.emplace(set.images()[i].instanceId, i);
      std::vector<bool> isLesion(set.size(), false);
      for (int i : out.lesionImages)
        isLesion[static_cast<std::size_t>(i)] = true;
      std::vector<std::vector<LesionBox>> candidates(set.size());
      int outsideSet = 0;
      for (const storage::LesionBoxRecord& stored : index.lesionBoxes(label)) {
        const auto image = imageOf.find(stored.instanceId);
        const auto record = records.find(stored.instanceId);
        if (image == imageOf.end() || record == records.end()) {
          ++outsideSet;  // not decoded, or indexed after the set was loaded
          continue;
        }
        const LesionBox box = toCacheBox(stored, record->second, cacheSize);
        if (isLesion[image->second]) {
          candidates[image->second].push_back(box);
        } else {
          ++out.proposed;
          ++out.dropped[heldOut[image->second] ? "held-out patient" : "not a lesion image"];
        }
      }
      for (int i : out.lesionImages) {
        const auto u = static_cast<std::size_t>(i);
        keep(out, i, std::move(candidates[u]), content[u], config, false);
      }
      out.details = {{"storedBoxesOutsideTheSet", outsideSet}};
    }
  }

  if (config.source != LesionSourceKind::Stored) {
    detail::LesionRun run{set,      cache, config, parseDevice(config.device), std::move(content),
                          progress, cancel};
    nlohmann::json details = nlohmann::json::object();
    std::vector<std::vector<LesionBox>> candidates =
        config.source == LesionSourceKind::Detector
            ? detail::detectorCandidates(run, out.lesionImages, details)
            : detail::camCandidates(run, out.lesionImages, trainImages, trainTargets, details);
    for (std::size_t k = 0; k < out.lesionImages.size(); ++k) {
      const int i = out.lesionImages[k];
      keep(out, i, std::move(candidates[k]), run.content[static_cast<std::size_t>(i)], config, true);
    }
    out.details = std::move(details);
  }
  if (needSplit) {
    out.details["split"] = splitId(split);
    out.details["heldOutLabelledImages"] = heldOutPositives + heldOutNegatives;
  }
  if (progress) {
    progress("lesion proposals (" + out.source + "): " + std::to_string(out.kept) + " of " +
             std::to_string(out.proposed) + " boxes kept on " + imagesText(out.lesionImages.size()) + ", " +
             std::to_string(out.lesionImagesWithoutBox) + " without a box");
  }
  return out;
}

ComclRoles toComclRoles(const LesionProposals& proposals) {
  ComclRoles roles;
  roles.lesionImages = proposals.lesionImages;
  roles.healthyImages = proposals.healthyImages;
  roles.boxes.resize(proposals.boxes.size());
  for (std::size_t i = 0; i < proposals.boxes.size(); ++i) {
    for (const LesionBox& b : proposals.boxes[i])
      roles.boxes[i].push_back({b.x0, b.y0, b.x1, b.y1});
  }
  return roles;
}

}  // namespace comcl::training
