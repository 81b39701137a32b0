#include "comcl/training/moco.h"

#include <torch/nn/functional/normalization.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

namespace comcl::training {

namespace F = torch::nn::functional;

namespace {

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw std::invalid_argument("moco." + field + " " + why);
}

int depthOf(const std::string& architecture) {
  if (architecture == "resnet18")
    return 18;
  if (architecture == "resnet50")
    return 50;
  invalid("architecture", "must be resnet18 or resnet50, not \"" + architecture + "\"");
}

torch::Tensor normalised(const torch::Tensor& embedding) {
  return F::normalize(embedding.to(torch::kFloat), F::NormalizeFuncOptions().dim(1));
}

// Uniform draws with replacement from `pool` (CPU int64 indices), as a tensor on `device`.
torch::Tensor drawFrom(const std::vector<std::int64_t>& pool, std::int64_t count, std::mt19937_64& rng,
                       torch::Device device) {
  std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
  std::vector<std::int64_t> drawn(static_cast<std::size_t>(count));
  for (auto& d : drawn)
    d = pool[pick(rng)];
  return torch::tensor(drawn, torch::kLong).to(device);
}

}  // namespace

std::string toString(NegativeStrategy strategy) {
  switch (strategy) {
    case NegativeStrategy::Default:
      return "default";
    case NegativeStrategy::SameLateralityOnly:
      return "same-laterality-only";
    case NegativeStrategy::Reweighted:
      return "reweighted";
    case NegativeStrategy::Appended:
      return "appended";
    case NegativeStrategy::Synthetic:
      break;
  }
  return "synthetic";
}

NegativeStrategy negativeStrategyFromString(const std::string& text) {
  for (NegativeStrategy s :
       {NegativeStrategy::Default, NegativeStrategy::SameLateralityOnly, NegativeStrategy::Reweighted,
        NegativeStrategy::Appended, NegativeStrategy::Synthetic}) {
    if (toString(s) == text)
      return s;
  }
  throw std::invalid_argument("unknown negative strategy \"" + text +
                              "\"; accepted: default, same-laterality-only, reweighted, appended, synthetic");
}

void MocoConfig::validate() const {
  depthOf(architecture);
  if (channels != 1 && channels != 3)
    invalid("channels", "must be 1 or 3, not " + std::to_string(channels));
  if (projectionDim < 1 || projectionDim > 4096)
    invalid("projectionDim", "must be in 1..4096, not " + std::to_string(projectionDim));
  if (queueSize < 1)
    invalid("queueSize", "must be at least 1, not " + std::to_string(queueSize));
  if (!(momentum >= 0 && momentum < 1))
    invalid("momentum", "must be in [0, 1), not " + std::to_string(momentum));
  if (!(temperature > 0))
    invalid("temperature", "must be positive, not " + std::to_string(temperature));
  if (bnGroups < 1)
    invalid("bnGroups", "must be at least 1, not " + std::to_string(bnGroups));
  if (!(hardNegativeTarget > 0 && hardNegativeTarget < 1))
    invalid("hardNegativeTarget", "must be in (0, 1), not " + std::to_string(hardNegativeTarget));
  if (!(appendFraction > 0 && appendFraction <= 1))
    invalid("appendFraction", "must be in (0, 1], not " + std::to_string(appendFraction));
}

nlohmann::json MocoConfig::toJson() const {
  return {{"architecture", architecture},     {"channels", channels},
          {"projectionDim", projectionDim},   {"mlpHead", mlpHead},
          {"queueSize", queueSize},           {"momentum", momentum},
          {"temperature", temperature},       {"bnGroups", bnGroups},
          {"negatives", toString(negatives)}, {"hardNegativeTarget", hardNegativeTarget},
          {"appendFraction", appendFraction}};
}

MocoConfig MocoConfig::fromJson(const nlohmann::json& json) {
  MocoConfig c;
  if (!json.is_object())
    throw std::invalid_argument("moco config must be a JSON object");
  for (const auto& [key, value] : json.items()) {
    if (key == "architecture")
      c.architecture = value.get<std::string>();
    else if (key == "channels")
      c.channels = value.get<int>();
    else if (key == "projectionDim")
      c.projectionDim = value.get<int>();
    else if (key == "mlpHead")
      c.mlpHead = value.get<bool>();
    else if (key == "queueSize")
      c.queueSize = value.get<int>();
    else if (key == "momentum")
      c.momentum = value.get<double>();
    else if (key == "temperature")
      c.temperature = value.get<double>();
    else if (key == "bnGroups")
      c.bnGroups = value.get<int>();
    else if (key == "negatives")
      c.negatives = negativeStrategyFromString(value.get<std::string>());
    else if (key == "hardNegativeTarget")
      c.hardNegativeTarget = value.get<double>();
    else if (key == "appendFraction")
      c.appendFraction = value.get<double>();
    else
      throw std::invalid_argument("moco config: unknown key \"" + key + "\"");
  }
  c.validate();
  return c;
}

ContrastiveEncoderImpl::ContrastiveEncoderImpl(const std::string& architecture, int channels,
                                               int projectionDim, bool mlpHead) {
  // The backbone's own fc is not used for pre-training; it is kept (1 output) so that the backbone's
  // state dict has torchvision's layout.
  backbone_ = register_module("backbone", std::make_shared<ResNet>(depthOf(architecture), channels, 1));
  const int dim = backbone_->featureDim();
  if (mlpHead) {
    head_ = register_module("head", torch::nn::Sequential(torch::nn::Linear(dim, dim), torch::nn::ReLU(),
                                                          torch::nn::Linear(dim, projectionDim)));
  } else {
    head_ = register_module("head", torch::nn::Sequential(torch::nn::Linear(dim, projectionDim)));
  }
}

torch::Tensor ContrastiveEncoderImpl::forward(torch::Tensor images) {
  return normalised(head_->forward(backbone_->features(std::move(images))));
}

MocoImpl::MocoImpl(MocoConfig config) : config_(std::move(config)) {
  config_.validate();
  query_ = register_module("encoder_q", ContrastiveEncoder(config_.architecture, config_.channels,
                                                           config_.projectionDim, config_.mlpHead));
  key_ = register_module("encoder_k", ContrastiveEncoder(config_.architecture, config_.channels,
                                                         config_.projectionDim, config_.mlpHead));
  copyToKeyEncoder(query_, key_);
  // Random unit vectors until real keys replace them (as MoCo does).
  queue_ = register_buffer("queue", normalised(torch::randn({config_.queueSize, config_.projectionDim})));
  queueMeta_ = register_buffer("queue_meta", torch::full({config_.queueSize, 3}, -1, torch::kLong));
  queuePtr_ = register_buffer("queue_ptr", torch::zeros({1}, torch::kLong));
  filled_ = register_buffer("queue_filled", torch::zeros({1}, torch::kLong));
}

bool MocoImpl::queueFull() const {
  return filled_.item<std::int64_t>() >= config_.queueSize;
}

torch::Tensor MocoImpl::embedQueries(const torch::Tensor& images) {
  const std::int64_t groups =
      std::max<std::int64_t>(1, std::min<std::int64_t>(config_.bnGroups, images.size(0) / 2));
  if (groups == 1)
    return query_->forward(images);
  std::vector<torch::Tensor> parts;
  for (const torch::Tensor& chunk : images.chunk(groups))
    parts.push_back(query_->forward(chunk));
  return torch::cat(parts);
}

torch::Tensor MocoImpl::embedKeys(const torch::Tensor& images, std::mt19937_64& rng) {
  torch::NoGradGuard noGrad;
  const std::int64_t n = images.size(0);
  const std::int64_t groups = std::max<std::int64_t>(1, std::min<std::int64_t>(config_.bnGroups, n / 2));
  if (groups == 1)
    return key_->forward(images);
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  const torch::Tensor permutation = torch::tensor(order, torch::kLong).to(images.device());
  const torch::Tensor shuffled = images.index_select(0, permutation);
  std::vector<torch::Tensor> parts;
  for (const torch::Tensor& chunk : shuffled.chunk(groups))
    parts.push_back(key_->forward(chunk));
  const torch::Tensor keysShuffled = torch::cat(parts);
  // Row i of keysShuffled belongs to image permutation[i].
  return torch::empty_like(keysShuffled).index_copy_(0, permutation, keysShuffled);
}

MocoStepOutput MocoImpl::forward(const torch::Tensor& queryImages, const torch::Tensor& keyImages,
                                 const KeyMetadata& queryMeta, const KeyMetadata& keyMeta,
                                 std::mt19937_64& rng) {
  if (queryImages.sizes() != keyImages.sizes())
    throw std::invalid_argument("MoCo: query and key batches differ in shape");
  const torch::Tensor q = embedQueries(queryImages).to(torch::kFloat);
  const torch::Tensor k = embedKeys(keyImages, rng).to(torch::kFloat);
  // Cosine similarities to the positive and to every queued key, shared by the loss and the monitor.
  const torch::Tensor lPos = (q * k).sum(1);
  const torch::Tensor lNeg = q.mm(queue_.detach().t());
  MocoStepOutput out;
  out.loss = lossFor(q, lPos, lNeg, queryMeta, rng);
  {
    torch::NoGradGuard noGrad;
    out.positiveAccuracy = (lPos >= lNeg.amax(1)).to(torch::kFloat).mean().item<double>();
  }
  pendingKeys_ = k.detach();
  const torch::Device device = q.device();
  pendingMeta_ =
      torch::stack({keyMeta.patient.to(device), keyMeta.study.to(device), keyMeta.laterality.to(device)}, 1);
  return out;
}

torch::Tensor MocoImpl::lossFor(const torch::Tensor& q, const torch::Tensor& lPos, const torch::Tensor& lNeg,
                                const KeyMetadata& meta, std::mt19937_64& rng) {
  const double t = config_.temperature;
  const torch::Tensor queue = queue_.detach();
  // Strategies only switch on once every queue entry carries real metadata (as in MedAug's code).
  if (config_.negatives == NegativeStrategy::Default || !queueFull())
    return infoNce(lPos, lNeg, t);

  const torch::Device device = q.device();
  const torch::Tensor queryLat = meta.laterality.to(device).unsqueeze(1);
  const torch::Tensor keyLat = queueMeta_.select(1, 2).unsqueeze(0);
  // Queries of unknown laterality treat every key as "same".
  const torch::Tensor sameLaterality = (keyLat == queryLat) | (queryLat < 0);
  switch (config_.negatives) {
    case NegativeStrategy::SameLateralityOnly: {
      const torch::Tensor samePatientStudy =
          (queueMeta_.select(1, 0).unsqueeze(0) == meta.patient.to(device).unsqueeze(1)) &
          (queueMeta_.select(1, 1).unsqueeze(0) == meta.study.to(device).unsqueeze(1));
      return infoNceMasked(lPos, lNeg, sameLaterality & ~samePatientStudy, t);
    }
    case NegativeStrategy::Reweighted:
      return infoNceReweighted(lPos, lNeg, sameLaterality & (queryLat >= 0), config_.hardNegativeTarget, t);
    default:
      break;
  }
  // Appended / synthetic: m extra same-laterality negatives per laterality group of queries.
  const auto m =
      std::max<std::int64_t>(1, static_cast<std::int64_t>(config_.appendFraction * config_.queueSize));
  const torch::Tensor keyLatCpu = queueMeta_.select(1, 2).to(torch::kCPU);
  const torch::Tensor queryLatCpu = meta.laterality.to(torch::kCPU);
  const auto* keyLatPtr = keyLatCpu.data_ptr<std::int64_t>();
  torch::Tensor total = torch::zeros({}, q.options());
  for (std::int64_t group : {std::int64_t{0}, std::int64_t{1}, std::int64_t{-1}}) {
    const torch::Tensor rows = (queryLatCpu == group).nonzero().squeeze(1);
    if (rows.numel() == 0)
      continue;
    std::vector<std::int64_t> pool;
    for (std::int64_t j = 0; j < config_.queueSize; ++j) {
      if (group < 0 || keyLatPtr[j] == group)
        pool.push_back(j);
    }
    const torch::Tensor rowsOnDevice = rows.to(device);
    const torch::Tensor qg = q.index_select(0, rowsOnDevice);
    std::vector<torch::Tensor> negatives{lNeg.index_select(0, rowsOnDevice)};
    if (!pool.empty()) {
      const torch::Tensor hard = queue.index_select(0, drawFrom(pool, m, rng, device));
      negatives.push_back(qg.mm(hard.t()));
      if (config_.negatives == NegativeStrategy::Synthetic) {
        const torch::Tensor a = queue.index_select(0, drawFrom(pool, m, rng, device));
        const torch::Tensor b = queue.index_select(0, drawFrom(pool, m, rng, device));
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        std::vector<float> mix(static_cast<std::size_t>(m));
        for (float& u : mix)
          u = static_cast<float>(unit(rng));
        const torch::Tensor u = torch::tensor(mix).to(device).unsqueeze(1);
        const torch::Tensor synthetic = normalised(u * a + (1 - u) * b);
        negatives.push_back(qg.mm(synthetic.t()));
      }
    }
    total = total + infoNce(lPos.index_select(0, rowsOnDevice), torch::cat(negatives, 1), t) *
                        static_cast<double>(rows.numel());
  }
  return total / static_cast<double>(q.size(0));
}

void copyToKeyEncoder(ContrastiveEncoder& query, ContrastiveEncoder& key) {
  torch::NoGradGuard noGrad;
  const auto qParams = query->parameters();
  const auto kParams = key->parameters();
  for (std::size_t i = 0; i < qParams.size(); ++i) {
    kParams[i].copy_(qParams[i]);
    kParams[i].set_requires_grad(false);
  }
  const auto qBuffers = query->buffers();
  const auto kBuffers = key->buffers();
  for (std::size_t i = 0; i < qBuffers.size(); ++i)
    kBuffers[i].copy_(qBuffers[i]);
}

void momentumUpdate(ContrastiveEncoder& query, ContrastiveEncoder& key, double momentum) {
  torch::NoGradGuard noGrad;
  const auto qParams = query->parameters();
  const auto kParams = key->parameters();
  for (std::size_t i = 0; i < qParams.size(); ++i)
    kParams[i].mul_(momentum).add_(qParams[i].detach(), 1.0 - momentum);
}

void MocoImpl::afterStep() {
  torch::NoGradGuard noGrad;
  momentumUpdate(query_, key_, config_.momentum);
  if (!pendingKeys_.defined())
    return;
  const std::int64_t capacity = config_.queueSize;
  std::int64_t n = std::min<std::int64_t>(pendingKeys_.size(0), capacity);
  torch::Tensor keys = pendingKeys_.narrow(0, pendingKeys_.size(0) - n, n);
  torch::Tensor meta = pendingMeta_.narrow(0, pendingMeta_.size(0) - n, n);
  std::int64_t ptr = queuePtr_.item<std::int64_t>();
  // Two slices when the batch wraps around the end of the ring.
  const std::int64_t first = std::min(n, capacity - ptr);
  queue_.narrow(0, ptr, first).copy_(keys.narrow(0, 0, first));
  queueMeta_.narrow(0, ptr, first).copy_(meta.narrow(0, 0, first));
  if (first < n) {
    queue_.narrow(0, 0, n - first).copy_(keys.narrow(0, first, n - first));
    queueMeta_.narrow(0, 0, n - first).copy_(meta.narrow(0, first, n - first));
  }
  queuePtr_.fill_((ptr + n) % capacity);
  filled_.fill_(std::min(capacity, filled_.item<std::int64_t>() + n));
  pendingKeys_ = torch::Tensor();
  pendingMeta_ = torch::Tensor();
}

torch::Tensor infoNce(const torch::Tensor& lPos, const torch::Tensor& lNeg, double temperature) {
  const torch::Tensor logits = torch::cat({lPos.unsqueeze(1), lNeg}, 1) / temperature;
  return (torch::logsumexp(logits, 1) - logits.select(1, 0)).mean();
}

torch::Tensor infoNceMasked(const torch::Tensor& lPos, const torch::Tensor& lNeg,
                            const torch::Tensor& keepMask, double temperature) {
  const torch::Tensor negatives = lNeg.masked_fill(~keepMask, -std::numeric_limits<float>::infinity());
  return infoNce(lPos, negatives, temperature);
}

torch::Tensor infoNceReweighted(const torch::Tensor& lPos, const torch::Tensor& lNeg,
                                const torch::Tensor& hardMask, double target, double temperature) {
  const double k = static_cast<double>(lNeg.size(1));
  const torch::Tensor r = hardMask.to(torch::kFloat).sum(1, /*keepdim=*/true) / k;
  const torch::Tensor degenerate = (r <= 0) | (r >= 1);
  const torch::Tensor safeR = r.clamp(1e-12, 1 - 1e-12);
  const torch::Tensor logHard = torch::where(degenerate, torch::zeros_like(r), torch::log(target / safeR));
  const torch::Tensor logEasy =
      torch::where(degenerate, torch::zeros_like(r), torch::log((1 - target) / (1 - safeR)));
  const torch::Tensor logWeights = torch::where(hardMask, logHard.expand_as(lNeg), logEasy.expand_as(lNeg));
  return infoNceLogWeighted(lPos, lNeg, logWeights, temperature);
}

torch::Tensor infoNceLogWeighted(const torch::Tensor& lPos, const torch::Tensor& lNeg,
                                 const torch::Tensor& logWeights, double temperature) {
  // logsumexp subtracts the row maximum first, so large logits (small T) do not overflow.
  const torch::Tensor pos = lPos.unsqueeze(1) / temperature;
  const torch::Tensor logits = torch::cat({pos, lNeg / temperature + logWeights}, 1);
  return (torch::logsumexp(logits, 1) - pos.squeeze(1)).mean();
}

}  // namespace comcl::training
