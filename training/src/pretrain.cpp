#include "comcl/training/pretrain.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "comcl/training/device.h"
#include "comcl/training/encoder_file.h"
#include "comcl/training/heap_retention.h"
#include "comcl/training/loader.h"
#include "comcl/training/model_io.h"
#include "comcl/training/stable_hash.h"
#include "comcl/training/tensor_batch.h"
#include "pretrain_method.h"

namespace comcl::training {

namespace fs = std::filesystem;

std::mt19937_64 detail::streamFor(std::uint64_t seed, std::int64_t epoch, std::int64_t step,
                                  std::uint32_t purpose) {
  std::seed_seq sequence{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                         static_cast<std::uint32_t>(epoch), static_cast<std::uint32_t>(step), purpose};
  return std::mt19937_64(sequence);
}

namespace {

using Clock = std::chrono::steady_clock;
using detail::streamFor;

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw std::invalid_argument("pretrain." + field + " " + why);
}

std::int64_t lateralityCode(Laterality laterality) {
  switch (laterality) {
    case Laterality::Frontal:
      return 0;
    case Laterality::Lateral:
      return 1;
    case Laterality::Unknown:
      break;
  }
  return -1;
}

// Query and positive source images of every step of one epoch.
struct EpochPlan {
  std::vector<int> queries;
  std::vector<int> positives;
};

EpochPlan planMocoEpoch(const PositiveSampler& sampler, std::size_t images, std::uint64_t seed, int epoch) {
  std::mt19937_64 rng = streamFor(seed, epoch, 0, detail::kEpochPlan);
  EpochPlan plan;
  plan.queries.resize(images);
  std::iota(plan.queries.begin(), plan.queries.end(), 0);
  std::shuffle(plan.queries.begin(), plan.queries.end(), rng);
  plan.positives.reserve(images);
  for (int query : plan.queries)
    plan.positives.push_back(sampler.sample(query, rng));  // resampled every epoch (MedAug)
  return plan;
}

KeyMetadata metadataOf(const TrainingSet& set, const std::vector<int>& images) {
  std::vector<std::int64_t> patient, study, laterality;
  for (int i : images) {
    const TrainingImage& image = set.images()[static_cast<std::size_t>(i)];
    patient.push_back(image.patient);
    study.push_back(image.study);
    laterality.push_back(lateralityCode(image.laterality));
  }
  return {torch::tensor(patient, torch::kLong), torch::tensor(study, torch::kLong),
          torch::tensor(laterality, torch::kLong)};
}

// Dynamic loss scaling for fp16 (LibTorch's C++ API has no GradScaler): the loss is multiplied by `scale`
// before backward; a step whose gradients hold inf/NaN is skipped and halves the scale; 2000 clean steps
// double it.
class LossScaler {
 public:
  explicit LossScaler(bool enabled) : enabled_(enabled) {}
  torch::Tensor scale(const torch::Tensor& loss) const { return enabled_ ? loss * scale_ : loss; }
  // Unscales the gradients in place; false when they overflowed (the step must be skipped).
  bool unscale(const std::vector<torch::Tensor>& parameters) {
    if (!enabled_)
      return true;
    bool finite = true;
    torch::NoGradGuard noGrad;
    for (const torch::Tensor& p : parameters) {
      if (!p.grad().defined())
        continue;
      p.mutable_grad().div_(scale_);
      finite = finite && torch::isfinite(p.grad()).all().item<bool>();
    }
    if (!finite) {
      scale_ = std::max(1.0, scale_ / 2);
      cleanSteps_ = 0;
      return false;
    }
    if (++cleanSteps_ >= 2000) {
      scale_ *= 2;
      cleanSteps_ = 0;
    }
    return true;
  }

 private:
  bool enabled_;
  double scale_ = 65536.0;
  int cleanSteps_ = 0;
};

bool isOutOfMemory(const std::exception& e) {
  return std::string(e.what()).find("out of memory") != std::string::npos;  // also "CUDA out of memory"
}

// The parts of a configuration that must not change when a run resumes.
nlohmann::json resumeRelevant(const PretrainConfig& config) {
  nlohmann::json json = config.toJson();
  for (const char* key : {"device", "loaderThreads", "prefetchDepth", "checkpointEverySteps", "precision"})
    json.erase(key);
  return json;
}

std::string firstDifference(const nlohmann::json& stored, const nlohmann::json& now) {
  const nlohmann::json patch = nlohmann::json::diff(stored, now);
  if (patch.empty())
    return {};
  const nlohmann::json& op = patch.front();
  const std::string path = op.value("path", "");
  std::string storedValue = "(absent)";
  try {
    storedValue = stored.at(nlohmann::json::json_pointer(path)).dump();
  } catch (const std::exception&) {
  }
  return path + " was " + storedValue + ", now " + (op.contains("value") ? op["value"].dump() : "(absent)");
}

struct Position {
  std::int64_t epoch = 0;        // 0-based epoch in progress
  std::int64_t stepInEpoch = 0;  // steps of that epoch already done
  std::int64_t globalStep = 0;
  double epochLossSum = 0;
  std::vector<double> epochLosses;
  std::vector<double> monitor;
};

void saveCheckpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                    const Position& p) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive modelArchive, optimizerArchive;
  writeState(modelArchive, model);
  optimizer.save(optimizerArchive);
  archive.write("model", modelArchive);
  archive.write("optimizer", optimizerArchive);
  archive.write("position", torch::tensor({p.epoch, p.stepInEpoch, p.globalStep}, torch::kLong));
  archive.write("epoch_loss_sum", torch::tensor({p.epochLossSum}, torch::kDouble));
  archive.write("epoch_losses", torch::tensor(p.epochLosses, torch::kDouble));
  archive.write("monitor", torch::tensor(p.monitor, torch::kDouble));
  saveArchiveAtomically(archive, path);
}

std::vector<double> toVector(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

Position loadCheckpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                        torch::Device device) {
  torch::serialize::InputArchive archive;
  try {
    loadArchive(archive, path, device);  // the optimiser's state must land where its parameters are
  } catch (const ModelError& e) {
    throw TrainingError(std::string(e.what()) +
                        "; the checkpoint is unreadable: use a new run directory or delete " + path +
                        " to start over");
  }
  Position p;
  try {
    torch::serialize::InputArchive modelArchive, optimizerArchive;
    archive.read("model", modelArchive);
    readStateStrict(modelArchive, model);
    archive.read("optimizer", optimizerArchive);
    optimizer.load(optimizerArchive);
    torch::Tensor position, lossSum, losses, monitor;
    archive.read("position", position);
    archive.read("epoch_loss_sum", lossSum);
    archive.read("epoch_losses", losses);
    archive.read("monitor", monitor);
    if (position.numel() != 3)
      throw ModelError("position has " + std::to_string(position.numel()) + " values, not 3");
    position = position.to(torch::kCPU);
    const auto* values = position.data_ptr<std::int64_t>();
    p.epoch = values[0];
    p.stepInEpoch = values[1];
    p.globalStep = values[2];
    p.epochLossSum = lossSum.item<double>();
    p.epochLosses = toVector(losses);
    p.monitor = toVector(monitor);
  } catch (const ModelError& e) {
    throw TrainingError("checkpoint " + path + " does not match this run's model: " + e.what() +
                        "; use a new run directory");
  } catch (const std::exception& e) {
    throw TrainingError("checkpoint " + path + " is unreadable (" + firstLine(e.what()) +
                        "); use a new run directory or delete the file to start over");
  }
  return p;
}

// Recent-window throughput for the progress line.
class Throughput {
 public:
  void add(double seconds, double waitSeconds, std::int64_t images, double viewSeconds) {
    totalViews_ += viewSeconds;
    window_.push_back({seconds, waitSeconds, images});
    if (window_.size() > 20)
      window_.pop_front();
    totalSeconds_ += seconds;
    totalWait_ += waitSeconds;
    totalImages_ += images;
    if (steps_++ == 0)
      firstStepSeconds_ = seconds;
  }
  double recentImagesPerSecond() const { return rate(window_); }
  double recentWaitShare() const {
    double time = 0, wait = 0;
    for (const auto& s : window_) {
      time += s.seconds;
      wait += s.wait;
    }
    return time > 0 ? wait / time : 0;
  }
  double totalImagesPerSecond() const { return totalSeconds_ > 0 ? totalImages_ / totalSeconds_ : 0; }
  double totalWaitShare() const { return totalSeconds_ > 0 ? totalWait_ / totalSeconds_ : 0; }
  double totalViewShare() const { return totalSeconds_ > 0 ? totalViews_ / totalSeconds_ : 0; }
  // Without the first step, which carries one-off costs (CUDA context, cuDNN's algorithm search): the
  // steady rate a long run approaches. 0 until two steps were timed.
  double afterFirstStepImagesPerSecond() const {
    const double seconds = totalSeconds_ - firstStepSeconds_;
    return steps_ > 1 && seconds > 0
               ? totalImages_ * static_cast<double>(steps_ - 1) / static_cast<double>(steps_) / seconds
               : 0;
  }

 private:
  struct Sample {
    double seconds, wait;
    std::int64_t images;
  };
  static double rate(const std::deque<Sample>& samples) {
    double time = 0, images = 0;
    for (const auto& s : samples) {
      time += s.seconds;
      images += static_cast<double>(s.images);
    }
    return time > 0 ? images / time : 0;
  }
  std::deque<Sample> window_;
  double totalSeconds_ = 0, totalWait_ = 0, totalImages_ = 0, firstStepSeconds_ = 0, totalViews_ = 0;
  std::int64_t steps_ = 0;
};

// MoCo v2 and MedAug: a query view and a key view per image (the key from the positive MedAug chose).
class MocoMethod final : public detail::PretrainMethod {
 public:
  MocoMethod(const TrainingSet& set, const storage::ImageCache& cache, const PretrainConfig& config)
      : set_(set),
        cache_(cache),
        config_(config),
        model_(config.moco),
        sampler_(set, config.pairs),
        augment_(config.augment) {}

  torch::nn::Module& module() override { return *model_; }
  std::vector<torch::Tensor> trainableParameters() override { return model_->queryEncoder()->parameters(); }
  ResNet& backbone() override { return model_->queryEncoder()->backbone(); }
  std::int64_t stepsPerEpoch() const override {
    return static_cast<std::int64_t>(set_.size()) / config_.batchSize;  // the last partial batch is dropped
  }
  std::int64_t imagesPerStep() const override { return config_.batchSize; }
  void planEpoch(std::int64_t epoch) override {
    plan_ = planMocoEpoch(sampler_, set_.size(), config_.seed, static_cast<int>(epoch));
  }
  detail::HostBatch load(std::int64_t step, bool pin) const override {
    const auto batch = static_cast<std::ptrdiff_t>(config_.batchSize);
    const auto begin = static_cast<std::ptrdiff_t>(step) * batch;
    const std::vector<int> queries(plan_.queries.begin() + begin, plan_.queries.begin() + begin + batch);
    const std::vector<int> keys(plan_.positives.begin() + begin, plan_.positives.begin() + begin + batch);
    const KeyMetadata q = metadataOf(set_, queries), k = metadataOf(set_, keys);
    const int channels = config_.moco.channels;
    return {{loadHostBatch(cache_, set_.cachedRefs(queries), pin, channels),
             loadHostBatch(cache_, set_.cachedRefs(keys), pin, channels), q.patient, q.study, q.laterality,
             k.patient, k.study, k.laterality}};
  }
  torch::Tensor forward(const detail::HostBatch& batch, const detail::StepContext& c) override {
    const std::vector<torch::Tensor>& t = batch.tensors;
    std::mt19937_64 queryRng = streamFor(c.seed, c.epoch, c.step, detail::kQueryView);
    std::mt19937_64 keyRng = streamFor(c.seed, c.epoch, c.step, detail::kKeyView);
    std::mt19937_64 modelRng = streamFor(c.seed, c.epoch, c.step, detail::kModel);
    const auto viewsStart = Clock::now();
    const torch::Tensor queries =
        (augment_(t[0].to(c.device, true), queryRng) - config_.mean) / config_.stddev;
    const torch::Tensor keys = (augment_(t[1].to(c.device, true), keyRng) - config_.mean) / config_.stddev;
    viewSeconds_ = std::chrono::duration<double>(Clock::now() - viewsStart).count();
    const KeyMetadata queryMeta{t[2].to(c.device, true), t[3].to(c.device, true), t[4].to(c.device, true)};
    const KeyMetadata keyMeta{t[5].to(c.device, true), t[6].to(c.device, true), t[7].to(c.device, true)};
    detail::CudaAutocast autocast(c.autocast, c.autocastType);
    return model_->forward(queries, keys, queryMeta, keyMeta, modelRng).loss;
  }
  void afterStep() override { model_->afterStep(); }
  double lastViewSeconds() const override { return viewSeconds_; }
  nlohmann::json encoderDetails() const override { return {{"pairs", config_.pairs.toString()}}; }

 private:
  const TrainingSet& set_;
  const storage::ImageCache& cache_;
  const PretrainConfig& config_;
  Moco model_;
  PositiveSampler sampler_;
  Augmenter augment_;
  EpochPlan plan_;
  double viewSeconds_ = 0;
};

// A short id of CoMCL's roles and boxes, so that a resumed run checks it trains on the same ones.
std::string rolesId(const ComclRoles& roles) {
  StableHash hash;
  for (int i : roles.lesionImages)
    hash.add("l" + std::to_string(i));
  for (int i : roles.healthyImages)
    hash.add("h" + std::to_string(i));
  for (std::size_t i = 0; i < roles.boxes.size(); ++i) {
    for (const PatchBox& b : roles.boxes[i]) {
      hash.add(std::to_string(i) + ":" + std::to_string(b.x0) + "," + std::to_string(b.y0) + "," +
               std::to_string(b.x1) + "," + std::to_string(b.y1));
    }
  }
  return hash.id("roles");
}

}  // namespace

int PretrainConfig::queueSizeFor(std::size_t images) const {
  const auto count = static_cast<int>(images);
  if (moco.queueSize <= count)
    return moco.queueSize;
  return std::max(batchSize, count / 2 / batchSize * batchSize);
}

PretrainConfig PretrainConfig::forMethod(const std::string& method, int imageSize) {
  PretrainConfig config;
  config.method = method;
  if (method == "moco") {
    config.pairs = PairStrategy::parse("instance");
    config.augment = mocoV2Augment(imageSize);
  } else if (method == "medaug") {
    config.pairs = PairStrategy::parse("same-patient/same-study/all-lateralities");
    config.augment = medAugAugment(imageSize);
  } else if (method == "comcl") {
    config.pairs = PairStrategy::parse("instance");
    config.augment = comclAugment(imageSize);
    config.moco.temperature = config.comcl.loss.temperature;  // 0.07
    config.moco.queueSize = 7200;                             // the healthy queue K
    config.moco.bnGroups = 1;
    config.optim.optimizer = "sgd";
    config.optim.learningRate = 0.02;
    config.optim.momentum = 0.9;
    config.optim.weightDecay = 5e-4;
    config.optim.schedule = "cosine";
  } else {
    invalid("method", "must be moco, medaug or comcl, not \"" + method + "\"");
  }
  return config;
}

void ComclConfig::validate() const {
  loss.validate();
  views.validate();
  if (imageQueueSize < 1)
    invalid("comcl.imageQueueSize", "must be at least 1, not " + std::to_string(imageQueueSize));
}

nlohmann::json ComclConfig::toJson() const {
  return {{"loss", loss.toJson()}, {"views", views.toJson()}, {"imageQueueSize", imageQueueSize}};
}

ComclConfig ComclConfig::fromJson(const nlohmann::json& json) {
  if (!json.is_object())
    throw std::invalid_argument("pretrain.comcl must be a JSON object");
  ComclConfig c;
  for (const auto& [key, value] : json.items()) {
    if (key == "loss")
      c.loss = ComclLossConfig::fromJson(value);
    else if (key == "views")
      c.views = ComclViewConfig::fromJson(value);
    else if (key == "imageQueueSize")
      c.imageQueueSize = value.get<int>();
    else
      throw std::invalid_argument("pretrain.comcl: unknown key \"" + key + "\"");
  }
  c.validate();
  return c;
}

void PretrainConfig::validate() const {
  if (method != "moco" && method != "medaug" && method != "comcl")
    invalid("method", "must be moco, medaug or comcl, not \"" + method + "\"");
  if (method == "comcl") {
    comcl.validate();
    if (moco.temperature != comcl.loss.temperature) {
      invalid("moco.temperature", "must equal comcl.loss.temperature for comcl (" +
                                      std::to_string(comcl.loss.temperature) + "), not " +
                                      std::to_string(moco.temperature));
    }
  }
  if (method != "medaug" && pairs.samePatient)
    invalid("pairs", "must be \"instance\" for " + method +
                         " (its positives are views of one image); use --method medaug for metadata pairs");
  if (method == "medaug" && !pairs.samePatient)
    invalid("pairs", "must be a same-patient strategy for medaug; use --method moco for instance pairs");
  moco.validate();
  augment.validate();
  optim.validate();
  if (epochs < 1 || epochs > 100000)
    invalid("epochs", "must be in 1..100000, not " + std::to_string(epochs));
  if (batchSize < 2)
    invalid("batchSize",
            "must be at least 2 (batch norm needs two images), not " + std::to_string(batchSize));
  if (precision != "fp32" && precision != "bf16" && precision != "fp16")
    invalid("precision", "must be fp32, bf16 or fp16, not \"" + precision + "\"");
  if (loaderThreads < 1 || loaderThreads > 64)
    invalid("loaderThreads", "must be in 1..64, not " + std::to_string(loaderThreads));
  if (prefetchDepth < 1 || prefetchDepth > 64)
    invalid("prefetchDepth", "must be in 1..64, not " + std::to_string(prefetchDepth));
  if (checkpointEverySteps < 0)
    invalid("checkpointEverySteps",
            "must be >= 0 (0: every epoch), not " + std::to_string(checkpointEverySteps));
  if (!(stddev > 0))
    invalid("stddev", "must be positive");
}

nlohmann::json PretrainConfig::toJson() const {
  nlohmann::json json = {{"method", method},
                         {"pairs", pairs.toString()},
                         {"moco", moco.toJson()},
                         {"augment", augment.toJson()},
                         {"optim", optim.toJson()},
                         {"epochs", epochs},
                         {"batchSize", batchSize},
                         {"seed", seed},
                         {"device", device},
                         {"precision", precision},
                         {"loaderThreads", loaderThreads},
                         {"prefetchDepth", prefetchDepth},
                         {"checkpointEverySteps", checkpointEverySteps},
                         {"mean", mean},
                         {"stddev", stddev}};
  if (method == "comcl")
    json["comcl"] = comcl.toJson();
  return json;
}

PretrainConfig PretrainConfig::fromJson(const nlohmann::json& json) {
  if (!json.is_object())
    throw std::invalid_argument("pretrain config must be a JSON object");
  PretrainConfig c;
  for (const auto& [key, value] : json.items()) {
    if (key == "method")
      c.method = value.get<std::string>();
    else if (key == "pairs")
      c.pairs = PairStrategy::parse(value.get<std::string>());
    else if (key == "moco")
      c.moco = MocoConfig::fromJson(value);
    else if (key == "augment")
      c.augment = AugmentConfig::fromJson(value);
    else if (key == "comcl")
      c.comcl = ComclConfig::fromJson(value);
    else if (key == "optim")
      c.optim = OptimConfig::fromJson(value);
    else if (key == "epochs")
      c.epochs = value.get<int>();
    else if (key == "batchSize")
      c.batchSize = value.get<int>();
    else if (key == "seed")
      c.seed = value.get<std::uint64_t>();
    else if (key == "device")
      c.device = value.get<std::string>();
    else if (key == "precision")
      c.precision = value.get<std::string>();
    else if (key == "loaderThreads")
      c.loaderThreads = value.get<int>();
    else if (key == "prefetchDepth")
      c.prefetchDepth = value.get<int>();
    else if (key == "checkpointEverySteps")
      c.checkpointEverySteps = value.get<int>();
    else if (key == "mean")
      c.mean = value.get<double>();
    else if (key == "stddev")
      c.stddev = value.get<double>();
    else
      throw std::invalid_argument("pretrain config: unknown key \"" + key + "\"");
  }
  c.validate();
  return c;
}

Pretrainer::Pretrainer(const TrainingSet& set, const storage::ImageCache& cache, PretrainConfig config,
                       std::string runDirectory, ComclRoles roles)
    : set_(set),
      cache_(cache),
      config_(std::move(config)),
      runDirectory_(std::move(runDirectory)),
      roles_(std::move(roles)) {
  config_.validate();
  if (config_.method == "comcl")
    ComclPlanner(set_, roles_, config_.comcl.views, config_.batchSize);  // DataError for unusable roles
  if (set_.size() < 2) {
    throw DataError(
        "the index holds " + std::to_string(set_.size()) +
        " decoded image(s); contrastive pre-training needs at least 2 (index or import images first)");
  }
  if (static_cast<std::size_t>(config_.batchSize) > set_.size()) {
    throw DataError("batch size " + std::to_string(config_.batchSize) + " is larger than the " +
                    std::to_string(set_.size()) + " images in the index; use a batch size of at most " +
                    std::to_string(set_.size()));
  }
}

PretrainResult Pretrainer::run(const ProgressCallback& onProgress, const std::atomic<bool>* cancel,
                               const EpochMonitor& monitor) {
  const torch::Device device = parseDevice(config_.device);
  const bool cuda = device.is_cuda();
  const HeapRetention heapRetention(device.is_cpu());
  if (config_.precision != "fp32" && !cuda) {
    throw TrainingError("precision " + config_.precision +
                        " uses CUDA autocast; on the CPU use --precision fp32");
  }
  std::error_code error;
  fs::create_directories(runDirectory_, error);
  if (error)
    throw TrainingError("cannot create the run directory " + runDirectory_ + ": " + error.message());
  const fs::path runJson = fs::path(runDirectory_) / "run.json";
  const fs::path checkpointPath = fs::path(runDirectory_) / "checkpoint.pt";
  const fs::path encoderPath = fs::path(runDirectory_) / "encoder";

  PretrainResult result;
  result.device = describeDevice(device);
  nlohmann::json runInfo = {{"format", "comcl-pretrain-run"},
                            {"config", resumeRelevant(config_)},
                            {"dataSnapshot", set_.snapshotId()},
                            {"images", set_.size()}};
  if (config_.method == "comcl")
    runInfo["config"]["lesionRoles"] = rolesId(roles_);  // the same lesion boxes when resumed
  if (fs::exists(runJson)) {
    nlohmann::json stored;
    try {
      std::ifstream(runJson) >> stored;
    } catch (const std::exception& e) {
      throw TrainingError("cannot parse " + runJson.string() + ": " + firstLine(e.what()));
    }
    if (stored.value("dataSnapshot", "") != set_.snapshotId()) {
      throw TrainingError("the run in " + runDirectory_ + " was started on data snapshot " +
                          stored.value("dataSnapshot", "?") + " but the index now gives " +
                          set_.snapshotId() + "; use a new run directory");
    }
    if (const std::string why = firstDifference(stored.value("config", nlohmann::json()), runInfo["config"]);
        !why.empty()) {
      throw TrainingError("the run in " + runDirectory_ + " has another configuration (" + why +
                          "); use a new run directory or the same settings");
    }
  } else {
    writeFileAtomically(runJson.string(), runInfo.dump(2) + "\n");
  }

  torch::manual_seed(config_.seed);
  std::unique_ptr<detail::PretrainMethod> method;
  if (config_.method == "comcl")
    method = detail::makeComclMethod(set_, cache_, config_, roles_);
  else
    method = std::make_unique<MocoMethod>(set_, cache_, config_);
  torch::nn::Module& model = method->module();
  model.to(device);
  // Every step has the same shapes, so cuDNN's per-shape algorithm search pays off after the first step.
  if (cuda)
    at::globalContext().setBenchmarkCuDNN(true);
  const std::vector<torch::Tensor> parameters = method->trainableParameters();
  std::unique_ptr<torch::optim::Optimizer> optimizer = makeOptimizer(parameters, config_.optim);

  Position position;
  if (fs::exists(checkpointPath)) {
    position = loadCheckpoint(checkpointPath.string(), model, *optimizer, device);
    result.resumed = true;
  }
  result.epochLosses = position.epochLosses;
  result.monitor = position.monitor;

  const std::int64_t stepsPerEpoch = method->stepsPerEpoch();
  const std::int64_t totalSteps = stepsPerEpoch * config_.epochs;
  const std::int64_t imagesPerStep = method->imagesPerStep();
  detail::StepContext context;
  context.device = device;
  context.autocast = cuda && config_.precision != "fp32";
  context.autocastType = config_.precision == "bf16" ? at::kBFloat16 : at::kHalf;
  context.seed = config_.seed;
  LossScaler scaler(config_.precision == "fp16");
  Throughput throughput;
  const auto saveNow = [&] { saveCheckpoint(checkpointPath.string(), model, *optimizer, position); };

  model.train();
  for (std::int64_t epoch = position.epoch; epoch < config_.epochs; ++epoch) {
    method->planEpoch(epoch);
    const auto produce = [&](std::int64_t step) { return method->load(step, cuda); };
    OrderedPrefetcher<detail::HostBatch> loader(produce, position.stepInEpoch, stepsPerEpoch,
                                                config_.loaderThreads, config_.prefetchDepth);
    while (position.stepInEpoch < stepsPerEpoch) {
      if (cancel && cancel->load()) {
        saveNow();
        result.cancelled = true;
        result.epochLosses = position.epochLosses;  // the epochs finished so far, this run's included
        result.monitor = position.monitor;
        result.epochsDone = static_cast<int>(position.epoch);
        result.stepsDone = position.globalStep;
        result.imagesPerSecond = throughput.totalImagesPerSecond();
        result.dataWaitShare = throughput.totalWaitShare();
        return result;
      }
      const auto stepStart = Clock::now();
      std::optional<detail::HostBatch> data = loader.next();
      const double waited = std::chrono::duration<double>(Clock::now() - stepStart).count();
      if (!data)
        throw TrainingError("the data loader stopped before the end of the epoch");
      const double lr =
          learningRateAt(config_.optim,
                         static_cast<double>(epoch) +
                             static_cast<double>(position.stepInEpoch) / static_cast<double>(stepsPerEpoch),
                         config_.epochs);
      setLearningRate(*optimizer, lr);
      double lossValue = 0;
      try {
        context.epoch = epoch;
        context.step = position.stepInEpoch;
        const torch::Tensor loss = method->forward(*data, context);
        optimizer->zero_grad();
        scaler.scale(loss).backward();
        if (scaler.unscale(parameters)) {
          clipGradients(parameters, config_.optim);
          optimizer->step();
        }
        method->afterStep();
        lossValue = loss.item<double>();
      } catch (const std::exception& e) {
        if (!isOutOfMemory(e))
          throw;
        throw TrainingError("out of memory on " + describeDevice(device) + " at batch size " +
                            std::to_string(config_.batchSize) + " (image size " +
                            std::to_string(config_.augment.outputSize) + ", " + config_.moco.architecture +
                            "); lower --batch-size or --image-size. The last checkpoint is intact.");
      }
      if (!std::isfinite(lossValue)) {
        throw TrainingError("the loss became " + std::to_string(lossValue) + " at epoch " +
                            std::to_string(epoch + 1) + " step " + std::to_string(position.stepInEpoch + 1) +
                            "; lower the learning rate. The last checkpoint is intact.");
      }
      const double seconds = std::chrono::duration<double>(Clock::now() - stepStart).count();
      throughput.add(seconds, waited, imagesPerStep, method->lastViewSeconds());
      ++position.stepInEpoch;
      ++position.globalStep;
      position.epochLossSum += lossValue;
      if (onProgress) {
        PretrainProgress p;
        p.epoch = static_cast<int>(epoch + 1);
        p.epochs = config_.epochs;
        p.step = position.stepInEpoch;
        p.stepsPerEpoch = stepsPerEpoch;
        p.globalStep = position.globalStep;
        p.totalSteps = totalSteps;
        p.loss = lossValue;
        p.epochLoss = position.epochLossSum / static_cast<double>(position.stepInEpoch);
        p.imagesPerSecond = throughput.recentImagesPerSecond();
        p.etaSeconds =
            p.imagesPerSecond > 0
                ? static_cast<double>((totalSteps - position.globalStep) * imagesPerStep) / p.imagesPerSecond
                : 0;
        p.learningRate = lr;
        p.dataWaitShare = throughput.recentWaitShare();
        onProgress(p);
      }
      if (config_.checkpointEverySteps > 0 && position.globalStep % config_.checkpointEverySteps == 0 &&
          position.stepInEpoch < stepsPerEpoch)
        saveNow();
    }
    position.epochLosses.push_back(position.epochLossSum / static_cast<double>(stepsPerEpoch));
    if (monitor) {
      method->backbone().eval();
      position.monitor.push_back(monitor(method->backbone(), static_cast<int>(epoch + 1)));
      model.train();
    }
    position.epoch = epoch + 1;
    position.stepInEpoch = 0;
    position.epochLossSum = 0;
    saveNow();
  }

  result.epochLosses = position.epochLosses;
  result.monitor = position.monitor;
  result.epochsDone = static_cast<int>(position.epoch);
  result.stepsDone = position.globalStep;
  result.imagesPerSecond = throughput.totalImagesPerSecond();
  result.imagesPerSecondAfterFirstStep = throughput.afterFirstStepImagesPerSecond();
  result.dataWaitShare = throughput.totalWaitShare();
  result.viewShare = cuda ? -1 : throughput.totalViewShare();
  if (!fs::exists(encoderPath)) {
    EncoderInfo info;
    info.architecture = config_.moco.architecture;
    info.channels = config_.moco.channels;
    info.imageSize = config_.augment.outputSize;
    info.mean = config_.mean;
    info.stddev = config_.stddev;
    info.details = {{"method", config_.method},
                    {"dataSnapshot", set_.snapshotId()},
                    {"epochs", config_.epochs},
                    {"finalLoss", position.epochLosses.empty() ? 0.0 : position.epochLosses.back()},
                    {"epochLosses", position.epochLosses},
                    {"config", config_.toJson()}};
    info.details.update(method->encoderDetails());
    ResNet& backbone = method->backbone();
    backbone.to(torch::kCPU);
    saveEncoder(encoderPath.string(), info, backbone);
  }
  result.completed = true;
  result.encoderDirectory = encoderPath.string();
  return result;
}

}  // namespace comcl::training
