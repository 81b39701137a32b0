#include "comcl/training/comcl_views.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "comcl/training/tensor_batch.h"
#include "image_ops.h"
#include "random_draws.h"

namespace comcl::training {

namespace {

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw std::invalid_argument("comcl.views." + field + " " + why);
}

int windowSide(double patchFraction, int imageSize) {
  return std::clamp(static_cast<int>(std::lround(patchFraction * imageSize)), 2, imageSize);
}

// Left edge of a window of side `window` in [0, size - window] that contains [b0, b1] where it can (the
// authors' shift: anywhere from "box at the window's right edge" to "box at its left edge"); a box wider
// than the window gets the window centred on it.
double windowAround(double b0, double b1, double window, double size, std::mt19937_64& rng) {
  const double u = detail::uniform01(rng);
  const double lo = std::max(0.0, b1 - window);
  const double hi = std::min(b0, size - window);
  if (lo > hi)
    return std::clamp(0.5 * (b0 + b1 - window), 0.0, size - window);
  return lo + u * (hi - lo);
}

}  // namespace

void ComclRoles::validate(std::size_t setSize) const {
  if (lesionImages.empty()) {
    throw DataError(
        "CoMCL needs images labelled positive for the lesion label (lesion images) and found none; label "
        "some, or pre-train with --method medaug, which needs no labels");
  }
  if (healthyImages.empty())
    throw DataError("CoMCL needs images labelled 0 for the lesion label (healthy images) and found none");
  if (boxes.size() != setSize) {
    throw DataError("lesion boxes are given for " + std::to_string(boxes.size()) + " images, the set has " +
                    std::to_string(setSize));
  }
  std::vector<char> role(setSize, 0);
  for (const auto* list : {&lesionImages, &healthyImages}) {
    for (int i : *list) {
      if (i < 0 || static_cast<std::size_t>(i) >= setSize)
        throw DataError("image index " + std::to_string(i) + " is outside the set of " +
                        std::to_string(setSize));
      if (role[static_cast<std::size_t>(i)]++)
        throw DataError("image " + std::to_string(i) + " is listed twice (lesion and healthy?)");
    }
  }
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    for (const PatchBox& b : boxes[i]) {
      const bool inside = b.x0 >= 0 && b.y0 >= 0 && b.x1 <= 1 && b.y1 <= 1 && b.x0 < b.x1 && b.y0 < b.y1;
      if (!inside) {
        throw DataError("lesion box (" + std::to_string(b.x0) + ", " + std::to_string(b.y0) + ", " +
                        std::to_string(b.x1) + ", " + std::to_string(b.y1) + ") of image " +
                        std::to_string(i) + " is empty or outside the image (normalised coordinates 0..1)");
      }
    }
  }
}

nlohmann::json ComclRoles::toJson() const {
  nlohmann::json boxesJson = nlohmann::json::object();
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    if (boxes[i].empty())
      continue;
    nlohmann::json list = nlohmann::json::array();
    for (const PatchBox& b : boxes[i])
      list.push_back({b.x0, b.y0, b.x1, b.y1});
    boxesJson[std::to_string(i)] = list;
  }
  return {{"lesionImages", lesionImages}, {"healthyImages", healthyImages}, {"boxes", boxesJson}};
}

ComclRoles ComclRoles::fromJson(const nlohmann::json& json, std::size_t setSize) {
  ComclRoles roles;
  try {
    roles.lesionImages = json.at("lesionImages").get<std::vector<int>>();
    roles.healthyImages = json.at("healthyImages").get<std::vector<int>>();
    roles.boxes.resize(setSize);
    for (const auto& [key, list] : json.at("boxes").items()) {
      const std::size_t image = std::stoul(key);
      if (image >= setSize)
        throw DataError("lesion boxes for image " + key + ", the set has " + std::to_string(setSize));
      for (const auto& b : list)
        roles.boxes[image].push_back(
            {b.at(0).get<float>(), b.at(1).get<float>(), b.at(2).get<float>(), b.at(3).get<float>()});
    }
  } catch (const DataError&) {
    throw;
  } catch (const std::exception& e) {
    throw DataError(std::string("malformed CoMCL roles: ") + e.what());
  }
  roles.validate(setSize);
  return roles;
}

ComclRoles comclRolesFromLabels(const TrainingSet& set, const std::string& label,
                                const std::map<std::string, std::string>* split) {
  ComclRoles roles;
  roles.boxes.resize(set.size());
  for (std::size_t i = 0; i < set.size(); ++i) {
    if (split) {
      const auto found = split->find(set.patientKeys()[static_cast<std::size_t>(set.images()[i].patient)]);
      if (found == split->end() || found->second != "train")
        continue;
    }
    const std::optional<double> value = set.label(i, label);
    if (!value || *value < 0)
      continue;
    (*value > 0 ? roles.lesionImages : roles.healthyImages).push_back(static_cast<int>(i));
  }
  return roles;
}

AugmentConfig comclAugment(int outputSize) {
  AugmentConfig augment;
  augment.outputSize = outputSize;
  augment.scaleMin = 0.8;
  augment.scaleMax = 1.0;
  augment.ratioMin = 0.8;
  augment.ratioMax = 1.25;
  augment.flipProbability = 0.5;
  augment.maxRotationDegrees = 10;
  augment.brightness = 0.4;
  augment.contrast = 0.4;
  augment.jitterProbability = 0.8;
  augment.blurProbability = 0;
  return augment;
}

void ComclViewConfig::validate() const {
  if (!(patchFraction > 0 && patchFraction <= 1))
    invalid("patchFraction", "must be in (0, 1], not " + std::to_string(patchFraction));
  if (healthyPerLesion < 1 || healthyPerLesion > 64)
    invalid("healthyPerLesion", "must be in 1..64, not " + std::to_string(healthyPerLesion));
  if (!(realLowQualityShare >= 0 && realLowQualityShare <= 1))
    invalid("realLowQualityShare", "must be in [0, 1], not " + std::to_string(realLowQualityShare));
  degradation.validate();
}

nlohmann::json ComclViewConfig::toJson() const {
  return {{"patchFraction", patchFraction},
          {"healthyPerLesion", healthyPerLesion},
          {"realLowQualityShare", realLowQualityShare},
          {"degradation", degradation.toJson()}};
}

ComclViewConfig ComclViewConfig::fromJson(const nlohmann::json& json) {
  if (!json.is_object())
    throw std::invalid_argument("comcl.views must be a JSON object");
  ComclViewConfig c;
  try {
    for (const auto& [key, value] : json.items()) {
      if (key == "patchFraction")
        c.patchFraction = value.get<double>();
      else if (key == "healthyPerLesion")
        c.healthyPerLesion = value.get<int>();
      else if (key == "realLowQualityShare")
        c.realLowQualityShare = value.get<double>();
      else if (key == "degradation")
        c.degradation = DegradationConfig::fromJson(value);
      else
        throw std::invalid_argument("comcl.views: unknown key \"" + key + "\"");
    }
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("comcl.views: ") + e.what());
  }
  c.validate();
  return c;
}

bool isLowQuality(const TrainingImage& image) {
  return image.qualityFlag && (*image.qualityFlag == "usable" || *image.qualityFlag == "reject");
}

ComclPlanner::ComclPlanner(const TrainingSet& set, const ComclRoles& roles, const ComclViewConfig& config,
                           int batchSize)
    : roles_(roles), config_(config), batchSize_(batchSize) {
  roles_.validate(set.size());
  config_.validate();
  for (int i : roles_.healthyImages)
    (isLowQuality(set.images()[static_cast<std::size_t>(i)]) ? healthyLow_ : healthyHigh_).push_back(i);
  for (int i : roles_.lesionImages) {
    ++(isLowQuality(set.images()[static_cast<std::size_t>(i)]) ? lesionLow_ : lesionHigh_);
    withoutBox_ += roles_.boxes[static_cast<std::size_t>(i)].empty() ? 1 : 0;
  }
  if (batchSize_ < 2 || static_cast<std::size_t>(batchSize_) > roles_.lesionImages.size()) {
    throw DataError("batch size " + std::to_string(batchSize_) +
                    " needs at least as many lesion images; the set has " +
                    std::to_string(roles_.lesionImages.size()) + " (use a batch size of 2.." +
                    std::to_string(roles_.lesionImages.size()) + ")");
  }
}

std::int64_t ComclPlanner::stepsPerEpoch() const {
  return static_cast<std::int64_t>(roles_.lesionImages.size()) / batchSize_;
}

std::vector<ComclStepPlan> ComclPlanner::planEpoch(std::mt19937_64& rng) const {
  std::vector<int> order = roles_.lesionImages;
  for (std::size_t i = order.size(); i > 1; --i)  // Fisher-Yates with the portable draws
    std::swap(order[i - 1],
              order[static_cast<std::size_t>(detail::uniformInt(rng, 0, static_cast<std::int64_t>(i - 1)))]);
  // High-quality healthy images are V3's sources; a set whose healthy images are all low quality uses them.
  const std::vector<int>& clean = healthyHigh_.empty() ? healthyLow_ : healthyHigh_;
  const auto pick = [&rng](const std::vector<int>& from) {
    return from[static_cast<std::size_t>(
        detail::uniformInt(rng, 0, static_cast<std::int64_t>(from.size()) - 1))];
  };
  const int healthyPerStep = batchSize_ * config_.healthyPerLesion;
  std::vector<ComclStepPlan> steps(static_cast<std::size_t>(stepsPerEpoch()));
  for (std::size_t s = 0; s < steps.size(); ++s) {
    ComclStepPlan& plan = steps[s];
    for (int b = 0; b < batchSize_; ++b) {
      const int image = order[s * static_cast<std::size_t>(batchSize_) + static_cast<std::size_t>(b)];
      const auto& boxes = roles_.boxes[static_cast<std::size_t>(image)];
      plan.lesion.push_back(image);
      plan.lesionBox.push_back(boxes.empty() ? -1
                                             : static_cast<int>(detail::uniformInt(
                                                   rng, 0, static_cast<std::int64_t>(boxes.size()) - 1)));
    }
    for (int h = 0; h < healthyPerStep; ++h) {
      plan.healthy.push_back(pick(clean));
      const bool real = !healthyLow_.empty() && detail::uniform01(rng) < config_.realLowQualityShare;
      plan.lowQuality.push_back(real ? pick(healthyLow_) : pick(clean));
      plan.lowQualityIsReal.push_back(real);
    }
  }
  return steps;
}

ComclStepImages loadComclStep(const TrainingSet& set, const storage::ImageCache& cache,
                              const ComclRoles& roles, const ComclStepPlan& plan, bool pin, int channels) {
  ComclStepImages step;
  step.lesionImages = loadHostBatch(cache, set.cachedRefs(plan.lesion), pin, channels);
  step.healthyImages = loadHostBatch(cache, set.cachedRefs(plan.healthy), pin, channels);
  step.lowQualityImages = loadHostBatch(cache, set.cachedRefs(plan.lowQuality), pin, channels);
  std::vector<float> boxes;
  for (std::size_t i = 0; i < plan.lesion.size(); ++i) {
    if (plan.lesionBox[i] < 0) {
      boxes.insert(boxes.end(), {-1, -1, -1, -1});
      continue;
    }
    const PatchBox& b =
        roles.boxes[static_cast<std::size_t>(plan.lesion[i])][static_cast<std::size_t>(plan.lesionBox[i])];
    boxes.insert(boxes.end(), {b.x0, b.y0, b.x1, b.y1});
  }
  step.lesionBoxes =
      torch::tensor(boxes, torch::kFloat32).reshape({static_cast<std::int64_t>(plan.lesion.size()), 4});
  std::vector<std::uint8_t> real(plan.lowQualityIsReal.begin(), plan.lowQualityIsReal.end());
  step.lowQualityIsReal = torch::tensor(real, torch::kUInt8).to(torch::kBool);
  return step;
}

ComclViewMaker::ComclViewMaker(ComclViewConfig config, AugmentConfig augment)
    : config_((config.validate(), std::move(config))),
      augment_(std::move(augment)),
      degrade_(config_.degradation) {}

ViewParams ComclViewMaker::windowParams(const std::vector<double>& left, const std::vector<double>& top,
                                        double window, int imageSize, std::mt19937_64& rng) const {
  const auto n = static_cast<std::int64_t>(left.size());
  const int side = static_cast<int>(window);
  ViewParams params = augment_.drawParams(n, side, side, rng);
  auto boxes = params.cropBox.accessor<double, 2>();
  for (std::int64_t i = 0; i < n; ++i) {
    boxes[i][0] += left[static_cast<std::size_t>(i)];
    boxes[i][1] += top[static_cast<std::size_t>(i)];
  }
  params.inputHeight = imageSize;
  params.inputWidth = imageSize;
  return params;
}

ComclViews ComclViewMaker::operator()(const ComclStepImages& images, std::mt19937_64& rng) const {
  const torch::Tensor& lesion = images.lesionImages;
  if (lesion.dim() != 4 || lesion.size(2) != lesion.size(3))
    throw std::invalid_argument("lesion images must be [B, C, S, S]");
  const int size = static_cast<int>(lesion.size(2));
  const double window = windowSide(config_.patchFraction, size);
  const std::int64_t b = lesion.size(0);

  // Lesion windows: two independent shifts round the same box (V1 / V2 share the first).
  const torch::Tensor boxes = images.lesionBoxes.to(torch::kCPU, torch::kFloat64).contiguous();
  auto box = boxes.accessor<double, 2>();
  std::vector<double> left1, top1, left2, top2;
  const auto placeWindow = [&](std::int64_t i, std::vector<double>& lefts, std::vector<double>& tops) {
    if (box[i][0] < 0) {  // no box: a random window
      lefts.push_back(detail::uniform01(rng) * (size - window));
      tops.push_back(detail::uniform01(rng) * (size - window));
    } else {
      lefts.push_back(windowAround(box[i][0] * size, box[i][2] * size, window, size, rng));
      tops.push_back(windowAround(box[i][1] * size, box[i][3] * size, window, size, rng));
    }
  };
  for (std::int64_t i = 0; i < b; ++i) {
    placeWindow(i, left1, top1);
    placeWindow(i, left2, top2);
  }
  const ViewParams v1 = windowParams(left1, top1, window, size, rng);
  const ViewParams v1Second = windowParams(left2, top2, window, size, rng);
  const ViewParams whole = augment_.drawParams(b, size, size, rng);

  ComclViews views;
  views.lesionDegradation = degrade_.drawParams(b, size, size, rng);
  const torch::Tensor degradedLesion = degrade_.apply(lesion, views.lesionDegradation);
  views.lesion = augment_.apply(lesion, v1);
  views.lesionSecond = augment_.apply(lesion, v1Second);
  views.lowQualityLesion = augment_.apply(degradedLesion, v1);
  views.image = augment_.apply(lesion, whole);
  views.lowQualityImage = augment_.apply(degradedLesion, whole);

  // Healthy patches: random windows.
  const auto randomWindows = [&](std::int64_t n, std::vector<double>& lefts, std::vector<double>& tops) {
    for (std::int64_t i = 0; i < n; ++i) {
      lefts.push_back(detail::uniform01(rng) * (size - window));
      tops.push_back(detail::uniform01(rng) * (size - window));
    }
  };
  const std::int64_t h = images.healthyImages.size(0);
  std::vector<double> left3, top3, left4, top4;
  randomWindows(h, left3, top3);
  const ViewParams v3 = windowParams(left3, top3, window, size, rng);
  randomWindows(h, left4, top4);
  const ViewParams v4 = windowParams(left4, top4, window, size, rng);
  views.healthyDegradation = degrade_.drawParams(h, size, size, rng);
  views.healthy = augment_.apply(images.healthyImages, v3);

  // V4: real low-quality images as they are, the others degraded.
  const torch::Tensor isReal = images.lowQualityIsReal.to(torch::kCPU);
  const auto* real = isReal.data_ptr<bool>();
  std::vector<std::int64_t> synthetic;
  std::vector<DegradeParams> syntheticParams;
  for (std::int64_t i = 0; i < h; ++i) {
    if (real[i]) {
      views.healthyDegradation[static_cast<std::size_t>(i)].steps.clear();
    } else {
      synthetic.push_back(i);
      syntheticParams.push_back(views.healthyDegradation[static_cast<std::size_t>(i)]);
    }
  }
  torch::Tensor lowQuality = images.lowQualityImages;
  if (!synthetic.empty()) {
    const torch::Tensor rows = torch::tensor(synthetic, torch::kLong).to(lowQuality.device());
    lowQuality =
        lowQuality.index_copy(0, rows, degrade_.apply(lowQuality.index_select(0, rows), syntheticParams));
  }
  views.lowQualityHealthy = augment_.apply(lowQuality, v4);
  return views;
}

const std::vector<std::string>& ComclContactSheet::columns() {
  static const std::vector<std::string> names{
      "image and box", "V1 lesion",           "V1' second window", "V2 low-quality lesion",
      "I_HQ image",    "I_LQ degraded image", "V3 healthy",        "V4 low-quality healthy"};
  return names;
}

ComclContactSheet makeComclContactSheet(const TrainingSet& set, const storage::ImageCache& cache,
                                        const ComclRoles& roles, const ComclViewConfig& config,
                                        const AugmentConfig& augment, int examples, std::uint64_t seed,
                                        int gap) {
  const ComclPlanner planner(set, roles, config, examples);
  std::mt19937_64 rng(seed);
  const ComclStepPlan plan = planner.planEpoch(rng).front();
  const ComclStepImages images = loadComclStep(set, cache, roles, plan, false);
  const ComclViews views = ComclViewMaker(config, augment)(images, rng);
  const std::int64_t v = augment.outputSize;

  // The whole lesion image at the view size with its box outlined in white.
  torch::Tensor whole = detail::resizedTo(images.lesionImages, v).clone();  // drawn on below
  const auto boxes = images.lesionBoxes.accessor<float, 2>();
  ComclContactSheet sheet;
  std::vector<torch::Tensor> rows;
  const auto pixel = [v](float u) {
    return std::clamp<std::int64_t>(static_cast<std::int64_t>(u * v), 0, v - 1);
  };
  for (std::int64_t i = 0; i < whole.size(0); ++i) {
    nlohmann::json row = {
        {"lesionImage",
         set.images()[static_cast<std::size_t>(plan.lesion[static_cast<std::size_t>(i)])].resourceId},
        {"lesionDegradation", views.lesionDegradation[static_cast<std::size_t>(i)].toJson()},
        {"healthyImage",
         set.images()[static_cast<std::size_t>(plan.healthy[static_cast<std::size_t>(i)])].resourceId},
        {"lowQualityImage",
         set.images()[static_cast<std::size_t>(plan.lowQuality[static_cast<std::size_t>(i)])].resourceId},
        {"lowQualityIsReal", static_cast<bool>(plan.lowQualityIsReal[static_cast<std::size_t>(i)])},
        {"box", nullptr}};
    if (!plan.lowQualityIsReal[static_cast<std::size_t>(i)])
      row["lowQualityDegradation"] = views.healthyDegradation[static_cast<std::size_t>(i)].toJson();
    if (boxes[i][0] >= 0) {
      row["box"] = {boxes[i][0], boxes[i][1], boxes[i][2], boxes[i][3]};
      const std::int64_t x0 = pixel(boxes[i][0]), y0 = pixel(boxes[i][1]), x1 = pixel(boxes[i][2]),
                         y1 = pixel(boxes[i][3]);
      using torch::indexing::Slice;
      whole.index_put_({i, Slice(), Slice(y0, y1 + 1), x0}, 1.0);
      whole.index_put_({i, Slice(), Slice(y0, y1 + 1), x1}, 1.0);
      whole.index_put_({i, Slice(), y0, Slice(x0, x1 + 1)}, 1.0);
      whole.index_put_({i, Slice(), y1, Slice(x0, x1 + 1)}, 1.0);
    }
    sheet.rows.push_back(row);
    std::vector<torch::Tensor> tiles;
    const std::int64_t channels = whole.size(1);
    for (const torch::Tensor& view :
         {whole, views.lesion, views.lesionSecond, views.lowQualityLesion, views.image, views.lowQualityImage,
          views.healthy, views.lowQualityHealthy}) {
      if (!tiles.empty())
        tiles.push_back(torch::full({v, static_cast<std::int64_t>(gap), channels}, 0.5));
      tiles.push_back(view[i].permute({1, 2, 0}).to(torch::kCPU, torch::kFloat32));
    }
    if (!rows.empty())
      rows.push_back(torch::full(
          {static_cast<std::int64_t>(gap), 8 * v + 7 * static_cast<std::int64_t>(gap), channels}, 0.5));
    rows.push_back(torch::cat(tiles, 1));
  }
  sheet.pixels = torch::cat(rows, 0).clamp(0, 1).contiguous();
  return sheet;
}

}  // namespace comcl::training
