#include "comcl/training/comcl_loss.h"

#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>
#include <vector>

#include "comcl/training/moco.h"
#include "image_ops.h"

namespace comcl::training {

namespace {

const std::string kSubject = "comcl loss";
constexpr double kLargest = std::numeric_limits<double>::max();

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw std::invalid_argument(kSubject + " " + field + " " + why);
}

void requireRange(const std::string& field, double value, double low, double high) {
  detail::requireRange(kSubject, field, value, low, high);
}

// The config's plain fields, so that toJson and fromJson cannot drift apart.
const std::vector<std::pair<std::string, double ComclLossConfig::*>>& numberFields() {
  static const std::vector<std::pair<std::string, double ComclLossConfig::*>> fields = {
      {"temperature", &ComclLossConfig::temperature},
      {"lesionWeight", &ComclLossConfig::lesionWeight},
      {"qualityWeight", &ComclLossConfig::qualityWeight},
      {"imageWeight", &ComclLossConfig::imageWeight},
      {"rho0", &ComclLossConfig::rho0},
      {"mu", &ComclLossConfig::mu},
      {"rhoMax", &ComclLossConfig::rhoMax},
      {"beta", &ComclLossConfig::beta},
  };
  return fields;
}

const std::vector<std::pair<std::string, bool ComclLossConfig::*>>& switchFields() {
  static const std::vector<std::pair<std::string, bool ComclLossConfig::*>> fields = {
      {"lesionTerm", &ComclLossConfig::lesionTerm},
      {"qualityTerm", &ComclLossConfig::qualityTerm},
      {"imageTerm", &ComclLossConfig::imageTerm},
  };
  return fields;
}

template <typename Member>
const Member* fieldNamed(const std::vector<std::pair<std::string, Member>>& fields, const std::string& key) {
  for (const auto& [name, member] : fields)
    if (name == key)
      return &member;
  return nullptr;
}

// An embedding of a switched-on term: floating-point [B, dim]; `rows` < 0 accepts any B.
void checkEmbedding(const std::string& name, const torch::Tensor& embedding, std::int64_t rows,
                    std::int64_t dim) {
  if (!embedding.defined())
    invalid(name, "is missing (its term is switched on)");
  if (embedding.dim() != 2 || !embedding.is_floating_point())
    invalid(name, "must be a floating-point [B, D] tensor, not rank " + std::to_string(embedding.dim()));
  if ((rows >= 0 && embedding.size(0) != rows) || embedding.size(1) != dim) {
    invalid(name, "must be [" + (rows >= 0 ? std::to_string(rows) : std::string("B")) + ", " +
                      std::to_string(dim) + "], not [" + std::to_string(embedding.size(0)) + ", " +
                      std::to_string(embedding.size(1)) + "]");
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Config

std::string toString(HardNegativeMode mode) {
  return mode == HardNegativeMode::FixedTopK ? "fixed-top-k" : "top-fraction";
}

HardNegativeMode hardNegativeModeFromString(const std::string& text) {
  for (HardNegativeMode mode : {HardNegativeMode::TopFraction, HardNegativeMode::FixedTopK})
    if (toString(mode) == text)
      return mode;
  invalid("hardNegatives", "must be top-fraction or fixed-top-k, not \"" + text + "\"");
}

void ComclLossConfig::validate() const {
  if (!(temperature > 0 && temperature <= kLargest))
    invalid("temperature", "must be positive and finite, not " + detail::numberText(temperature));
  requireRange("lesionWeight", lesionWeight, 0, kLargest);
  requireRange("qualityWeight", qualityWeight, 0, kLargest);
  requireRange("imageWeight", imageWeight, 0, kLargest);
  if (!lesionTerm && !qualityTerm && !imageTerm)
    invalid("lesionTerm/qualityTerm/imageTerm", "switch every term off; at least one must stay on");
  requireRange("rho0", rho0, 0, 1);
  requireRange("mu", mu, 1, kLargest);
  requireRange("rhoMax", rhoMax, rho0, 1);
  requireRange("beta", beta, 0, kLargest);
  if (fixedTopK < 0)
    invalid("fixedTopK", "must be at least 0, not " + std::to_string(fixedTopK));
}

nlohmann::json ComclLossConfig::toJson() const {
  nlohmann::json json = nlohmann::json::object();
  for (const auto& [name, member] : numberFields())
    json[name] = this->*member;
  for (const auto& [name, member] : switchFields())
    json[name] = this->*member;
  json["hardNegatives"] = toString(hardNegatives);
  json["fixedTopK"] = fixedTopK;
  return json;
}

ComclLossConfig ComclLossConfig::fromJson(const nlohmann::json& json) {
  if (!json.is_object())
    invalid("config", "must be a JSON object, not " + json.dump());
  ComclLossConfig config;
  for (const auto& [key, value] : json.items()) {
    if (const auto* number = fieldNamed(numberFields(), key)) {
      if (!value.is_number())
        invalid(key, "must be a number, not " + value.dump());
      config.*(*number) = value.get<double>();
    } else if (const auto* onOff = fieldNamed(switchFields(), key)) {
      if (!value.is_boolean())
        invalid(key, "must be true or false, not " + value.dump());
      config.*(*onOff) = value.get<bool>();
    } else if (key == "hardNegatives") {
      if (!value.is_string())
        invalid(key, "must be a string, not " + value.dump());
      config.hardNegatives = hardNegativeModeFromString(value.get<std::string>());
    } else if (key == "fixedTopK") {
      if (!value.is_number_integer())
        invalid(key, "must be an integer, not " + value.dump());
      requireRange(key, value.get<double>(), 0, std::numeric_limits<int>::max());
      config.fixedTopK = value.get<int>();
    } else {
      invalid("config", "has an unknown key \"" + key + "\"");
    }
  }
  config.validate();
  return config;
}

// ---------------------------------------------------------------------------------------------------------
// Self-paced schedule

SelfPacedSchedule::SelfPacedSchedule(const ComclLossConfig& config)
    : mode_(config.hardNegatives),
      rho0_(config.rho0),
      mu_(config.mu),
      rhoMax_(config.rhoMax),
      beta_(config.beta),
      fixedTopK_(config.fixedTopK) {
  config.validate();
}

double SelfPacedSchedule::rho(int epoch) const {
  if (epoch < 0)
    invalid("epoch", "must be at least 0 (epochs count from 0), not " + std::to_string(epoch));
  // pow overflows to +inf for large epochs, which min() turns into rhoMax.
  return std::min(rhoMax_, rho0_ * std::pow(mu_, epoch));
}

std::int64_t SelfPacedSchedule::hardCount(std::int64_t negatives, int epoch) const {
  if (mode_ == HardNegativeMode::FixedTopK)
    return std::min<std::int64_t>(fixedTopK_, negatives);
  const double share = rho(epoch) * static_cast<double>(negatives);
  // Rounding error in rho0 * mu^epoch must not add a hard negative when the product is an integer.
  return std::min(negatives, static_cast<std::int64_t>(std::ceil(share * (1 - 1e-12))));
}

torch::Tensor SelfPacedSchedule::negativeWeights(const torch::Tensor& hardness, int epoch,
                                                 const torch::Tensor& members) const {
  if (!hardness.defined() || hardness.dim() != 2 || !hardness.is_floating_point())
    invalid("hardness", "must be a floating-point [B, K] tensor");
  rho(epoch);  // throws for a negative epoch, whatever the mode and beta
  torch::NoGradGuard noGrad;
  const torch::Tensor scores = hardness.detach();
  const torch::Tensor isMember = members.defined()
                                     ? members.to(scores.device(), torch::kBool).expand_as(scores)
                                     : torch::ones_like(scores, torch::kBool);
  const torch::Tensor weights = isMember.to(scores.scalar_type());  // 1 for every member, 0 for the rest
  const std::int64_t columns = scores.size(1);
  if (beta_ == 0 || columns == 0)
    return weights;

  // Rank of every candidate per row, hardest first; non-members sort last, ties keep column order.
  const torch::Tensor ranked = scores.masked_fill(~isMember, -std::numeric_limits<double>::infinity());
  const torch::Tensor order =
      std::get<1>(torch::sort(ranked, /*stable=*/true, /*dim=*/1, /*descending=*/true));
  const torch::Tensor columnIndex =
      torch::arange(columns, torch::TensorOptions().dtype(torch::kLong).device(scores.device()));
  const torch::Tensor rank = torch::empty_like(order).scatter_(1, order, columnIndex.expand_as(order));

  // One hard count per row, from the host formula (one small device-to-host copy per call).
  const torch::Tensor memberCounts = isMember.sum(1).to(torch::kCPU, torch::kLong);
  const auto countOf = memberCounts.accessor<std::int64_t, 1>();
  std::vector<std::int64_t> counts(static_cast<std::size_t>(countOf.size(0)));
  for (std::int64_t row = 0; row < countOf.size(0); ++row)
    counts[static_cast<std::size_t>(row)] = hardCount(countOf[row], epoch);
  const torch::Tensor hardPerRow = torch::tensor(counts, torch::kLong).to(scores.device()).unsqueeze(1);
  const torch::Tensor hard = isMember & (rank < hardPerRow);
  return weights.masked_fill(hard, 1 + beta_);
}

// ---------------------------------------------------------------------------------------------------------
// Queues

KeyRing::KeyRing(std::int64_t capacity, std::int64_t dim, torch::Device device) {
  if (capacity < 1)
    invalid("queue capacity", "must be at least 1, not " + std::to_string(capacity));
  if (dim < 1)
    invalid("queue key dimension", "must be at least 1, not " + std::to_string(dim));
  const auto onDevice = torch::TensorOptions().device(device);
  keys_ = torch::zeros({capacity, dim}, onDevice.dtype(torch::kFloat));
  tags_ = torch::full({capacity}, -1, onDevice.dtype(torch::kLong));
  writePosition_ = torch::zeros({1}, onDevice.dtype(torch::kLong));
}

std::int64_t KeyRing::writePosition() const {
  return writePosition_.item<std::int64_t>();
}

std::int64_t KeyRing::written() const {
  return writtenSlots().sum().item<std::int64_t>();
}

torch::Tensor KeyRing::writtenSlots() const {
  return tags_ >= 0;
}

std::vector<std::pair<std::string, torch::Tensor>> KeyRing::buffers() const {
  return {{"keys", keys_}, {"tags", tags_}, {"write_position", writePosition_}};
}

void KeyRing::enqueue(const torch::Tensor& keys, std::int64_t tag) {
  if (!keys.defined() || keys.dim() != 2 || keys.size(1) != dim()) {
    invalid("queue keys", "must be [N, " + std::to_string(dim()) + "], not " +
                              (keys.defined() ? "rank " + std::to_string(keys.dim()) : "undefined"));
  }
  torch::NoGradGuard noGrad;
  const std::int64_t slots = capacity();
  const std::int64_t count = std::min(keys.size(0), slots);
  if (count == 0)
    return;
  const torch::Tensor incoming =
      keys.detach().narrow(0, keys.size(0) - count, count).to(keys_.device(), torch::kFloat);
  const std::int64_t start = writePosition();
  // Two slices when the batch wraps around the end of the ring.
  const std::int64_t first = std::min(count, slots - start);
  keys_.narrow(0, start, first).copy_(incoming.narrow(0, 0, first));
  tags_.narrow(0, start, first).fill_(tag);
  if (first < count) {
    keys_.narrow(0, 0, count - first).copy_(incoming.narrow(0, first, count - first));
    tags_.narrow(0, 0, count - first).fill_(tag);
  }
  writePosition_.fill_((start + count) % slots);
}

HealthyKeyQueue::HealthyKeyQueue(std::int64_t capacity, std::int64_t dim, torch::Device device)
    : KeyRing(capacity, dim, device) {}

void HealthyKeyQueue::enqueue(const torch::Tensor& keys, PatchKind kind) {
  // False-negative elimination: a lesion key as a negative would push lesions away from lesions.
  if (kind != PatchKind::HealthyHighQuality && kind != PatchKind::HealthyLowQuality)
    invalid("queue", "holds healthy-patch keys only; lesion keys are never negatives");
  KeyRing::enqueue(keys, static_cast<std::int64_t>(kind));
}

torch::Tensor HealthyKeyQueue::members(Subset subset) const {
  switch (subset) {
    case Subset::HighQuality:
      return tags() == static_cast<std::int64_t>(PatchKind::HealthyHighQuality);
    case Subset::LowQuality:
      return tags() == static_cast<std::int64_t>(PatchKind::HealthyLowQuality);
    case Subset::All:
      break;
  }
  return writtenSlots();
}

// ---------------------------------------------------------------------------------------------------------
// Loss

ComclLoss::ComclLoss(ComclLossConfig config) : config_(std::move(config)), schedule_(config_) {}

torch::Tensor ComclLoss::term(const Named& query, const Named& positive, const KeyRing& queue,
                              const torch::Tensor& members, int epoch) const {
  checkEmbedding(query.name, query.tensor, -1, queue.dim());
  checkEmbedding(positive.name, positive.tensor, query.tensor.size(0), queue.dim());
  const torch::Tensor& anchors = query.tensor;
  // Keys and the queue are constants: only the query encoder learns from the loss.
  const torch::Tensor keys = positive.tensor.detach().to(anchors.scalar_type());
  const torch::Tensor negatives = queue.keys().detach().to(anchors.device(), anchors.scalar_type());
  const torch::Tensor lPos = (anchors * keys).sum(1);
  const torch::Tensor lNeg = anchors.mm(negatives.t());
  // Hardness is the cosine itself (the embeddings are unit vectors); weight 0 (log -inf) drops a slot.
  const torch::Tensor weights = schedule_.negativeWeights(lNeg, epoch, members);
  return infoNceLogWeighted(lPos, lNeg, weights.log(), config_.temperature);
}

ComclLossOutput ComclLoss::operator()(const ComclStepEmbeddings& step, const HealthyKeyQueue& healthy,
                                      const ImageKeyQueue& images, int epoch) const {
  ComclLossOutput out;
  std::vector<torch::Tensor> weighted;
  if (config_.lesionTerm) {
    out.lesion = term({"lesionQuery", step.lesionQuery}, {"lesionKey", step.lesionKey}, healthy,
                      healthy.members(HealthyKeyQueue::Subset::All), epoch);
    weighted.push_back(config_.lesionWeight * out.lesion);
  }
  if (config_.qualityTerm) {
    out.quality = term({"lowQualityLesionQuery", step.lowQualityLesionQuery},
                       {"highQualityLesionKey", step.highQualityLesionKey}, healthy,
                       healthy.members(HealthyKeyQueue::Subset::LowQuality), epoch);
    weighted.push_back(config_.qualityWeight * out.quality);
  }
  if (config_.imageTerm) {
    out.image = term({"lowQualityImageQuery", step.lowQualityImageQuery},
                     {"highQualityImageKey", step.highQualityImageKey}, images, images.writtenSlots(), epoch);
    weighted.push_back(config_.imageWeight * out.image);
  }
  out.total = weighted.front();
  for (std::size_t i = 1; i < weighted.size(); ++i)
    out.total = out.total + weighted[i];
  return out;
}

}  // namespace comcl::training
