#include "comcl/training/pretrain.h"

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
#include "comcl/training/tensor_batch.h"

namespace comcl::training {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw std::invalid_argument("pretrain." + field + " " + why);
}

// An independent generator for each (seed, epoch, step, purpose): what a step draws never depends on how
// many draws earlier steps made, so resuming mid-run reproduces the uninterrupted run.
std::mt19937_64 streamFor(std::uint64_t seed, std::int64_t epoch, std::int64_t step, std::uint32_t purpose) {
  std::seed_seq sequence{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                         static_cast<std::uint32_t>(epoch), static_cast<std::uint32_t>(step), purpose};
  return std::mt19937_64(sequence);
}
enum Purpose : std::uint32_t { kEpochPlan = 1, kQueryView = 2, kKeyView = 3, kModel = 4 };

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

EpochPlan planEpoch(const PositiveSampler& sampler, std::size_t images, std::uint64_t seed, int epoch) {
  std::mt19937_64 rng = streamFor(seed, epoch, 0, kEpochPlan);
  EpochPlan plan;
  plan.queries.resize(images);
  std::iota(plan.queries.begin(), plan.queries.end(), 0);
  std::shuffle(plan.queries.begin(), plan.queries.end(), rng);
  plan.positives.reserve(images);
  for (int query : plan.queries)
    plan.positives.push_back(sampler.sample(query, rng));  // resampled every epoch (MedAug)
  return plan;
}

struct StepBatch {
  torch::Tensor queryImages;  // [B, 1, S, S] float [0, 1], CPU (pinned for CUDA)
  torch::Tensor keyImages;
  KeyMetadata queryMeta;
  KeyMetadata keyMeta;
};

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

torch::Tensor readImages(const TrainingSet& set, const storage::ImageCache& cache,
                         const std::vector<int>& images, bool pin) {
  std::vector<CachedImageRef> refs;
  refs.reserve(images.size());
  for (int i : images)
    refs.push_back(set.images()[static_cast<std::size_t>(i)].cached);
  return loadHostBatch(cache, refs, pin);
}

KeyMetadata toDevice(const KeyMetadata& meta, torch::Device device) {
  return {meta.patient.to(device, true), meta.study.to(device, true), meta.laterality.to(device, true)};
}

// Autocast for CUDA in the scope of one forward pass. LibTorch 2.4 renamed the calls (device-type argument).
class CudaAutocast {
 public:
  CudaAutocast(bool enabled, at::ScalarType dtype) : enabled_(enabled) {
    if (!enabled_)
      return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_dtype(at::kCUDA, dtype);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(true);
#endif
  }
  ~CudaAutocast() {
    if (!enabled_)
      return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }
  CudaAutocast(const CudaAutocast&) = delete;
  CudaAutocast& operator=(const CudaAutocast&) = delete;

 private:
  bool enabled_;
};

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

void saveCheckpoint(const std::string& path, Moco& model, torch::optim::Optimizer& optimizer,
                    const Position& p) {
  torch::serialize::OutputArchive archive;
  torch::serialize::OutputArchive modelArchive, optimizerArchive;
  writeState(modelArchive, *model);
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

Position loadCheckpoint(const std::string& path, Moco& model, torch::optim::Optimizer& optimizer,
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
    readStateStrict(modelArchive, *model);
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
  void add(double seconds, double waitSeconds, std::int64_t images) {
    window_.push_back({seconds, waitSeconds, images});
    if (window_.size() > 20)
      window_.pop_front();
    totalSeconds_ += seconds;
    totalWait_ += waitSeconds;
    totalImages_ += images;
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
  double totalSeconds_ = 0, totalWait_ = 0, totalImages_ = 0;
};

}  // namespace

PretrainConfig PretrainConfig::forMethod(const std::string& method, int imageSize) {
  PretrainConfig config;
  config.method = method;
  if (method == "moco") {
    config.pairs = PairStrategy::parse("instance");
    config.augment = mocoV2Augment(imageSize);
  } else if (method == "medaug") {
    config.pairs = PairStrategy::parse("same-patient/same-study/all-lateralities");
    config.augment = medAugAugment(imageSize);
  } else {
    invalid("method", "must be moco or medaug, not \"" + method + "\"");
  }
  return config;
}

void PretrainConfig::validate() const {
  if (method != "moco" && method != "medaug")
    invalid("method", "must be moco or medaug, not \"" + method + "\"");
  if (method == "moco" && pairs.samePatient)
    invalid("pairs",
            "must be \"instance\" for moco (MoCo v2 pairs two views of one image); use --method medaug");
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
  return {{"method", method},
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
                       std::string runDirectory)
    : set_(set), cache_(cache), config_(std::move(config)), runDirectory_(std::move(runDirectory)) {
  config_.validate();
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
  const nlohmann::json runInfo = {{"format", "comcl-pretrain-run"},
                                  {"config", resumeRelevant(config_)},
                                  {"dataSnapshot", set_.snapshotId()},
                                  {"images", set_.size()}};
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
  Moco model(config_.moco);
  model->to(device);
  const std::vector<torch::Tensor> parameters = model->queryEncoder()->parameters();
  std::unique_ptr<torch::optim::Optimizer> optimizer = makeOptimizer(parameters, config_.optim);

  Position position;
  if (fs::exists(checkpointPath)) {
    position = loadCheckpoint(checkpointPath.string(), model, *optimizer, device);
    result.resumed = true;
  }
  result.epochLosses = position.epochLosses;
  result.monitor = position.monitor;

  const PositiveSampler sampler(set_, config_.pairs);
  const Augmenter augment(config_.augment);
  const auto batch = static_cast<std::size_t>(config_.batchSize);
  const std::int64_t stepsPerEpoch =
      static_cast<std::int64_t>(set_.size() / batch);  // the last partial batch is dropped
  const std::int64_t totalSteps = stepsPerEpoch * config_.epochs;
  const at::ScalarType autocastType = config_.precision == "bf16" ? at::kBFloat16 : at::kHalf;
  LossScaler scaler(config_.precision == "fp16");
  Throughput throughput;
  const auto saveNow = [&] { saveCheckpoint(checkpointPath.string(), model, *optimizer, position); };

  model->train();
  for (std::int64_t epoch = position.epoch; epoch < config_.epochs; ++epoch) {
    const EpochPlan plan = planEpoch(sampler, set_.size(), config_.seed, static_cast<int>(epoch));
    auto produce = [&](std::int64_t step) {
      const auto begin = static_cast<std::ptrdiff_t>(static_cast<std::size_t>(step) * batch);
      const std::vector<int> queries(plan.queries.begin() + begin,
                                     plan.queries.begin() + begin + static_cast<std::ptrdiff_t>(batch));
      const std::vector<int> keys(plan.positives.begin() + begin,
                                  plan.positives.begin() + begin + static_cast<std::ptrdiff_t>(batch));
      return StepBatch{readImages(set_, cache_, queries, cuda), readImages(set_, cache_, keys, cuda),
                       metadataOf(set_, queries), metadataOf(set_, keys)};
    };
    OrderedPrefetcher<StepBatch> loader(produce, position.stepInEpoch, stepsPerEpoch, config_.loaderThreads,
                                        config_.prefetchDepth);
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
      std::optional<StepBatch> data = loader.next();
      const double waited = std::chrono::duration<double>(Clock::now() - stepStart).count();
      const double lr =
          learningRateAt(config_.optim,
                         static_cast<double>(epoch) +
                             static_cast<double>(position.stepInEpoch) / static_cast<double>(stepsPerEpoch),
                         config_.epochs);
      setLearningRate(*optimizer, lr);
      double lossValue = 0;
      try {
        std::mt19937_64 queryRng = streamFor(config_.seed, epoch, position.stepInEpoch, kQueryView);
        std::mt19937_64 keyRng = streamFor(config_.seed, epoch, position.stepInEpoch, kKeyView);
        std::mt19937_64 modelRng = streamFor(config_.seed, epoch, position.stepInEpoch, kModel);
        const torch::Tensor queries =
            (augment(data->queryImages.to(device, true), queryRng) - config_.mean) / config_.stddev;
        const torch::Tensor keys =
            (augment(data->keyImages.to(device, true), keyRng) - config_.mean) / config_.stddev;
        MocoStepOutput out;
        {
          CudaAutocast autocast(cuda && config_.precision != "fp32", autocastType);
          out = model->forward(queries, keys, toDevice(data->queryMeta, device),
                               toDevice(data->keyMeta, device), modelRng);
        }
        optimizer->zero_grad();
        scaler.scale(out.loss).backward();
        if (scaler.unscale(parameters)) {
          clipGradients(parameters, config_.optim);
          optimizer->step();
        }
        model->afterStep();
        lossValue = out.loss.item<double>();
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
      throughput.add(seconds, waited, config_.batchSize);
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
        p.etaSeconds = p.imagesPerSecond > 0
                           ? static_cast<double>((totalSteps - position.globalStep) * config_.batchSize) /
                                 p.imagesPerSecond
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
      model->queryEncoder()->backbone().eval();
      position.monitor.push_back(monitor(model->queryEncoder()->backbone(), static_cast<int>(epoch + 1)));
      model->train();
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
  result.dataWaitShare = throughput.totalWaitShare();
  if (!fs::exists(encoderPath)) {
    EncoderInfo info;
    info.architecture = config_.moco.architecture;
    info.channels = config_.moco.channels;
    info.imageSize = config_.augment.outputSize;
    info.mean = config_.mean;
    info.stddev = config_.stddev;
    info.details = {{"method", config_.method},
                    {"pairs", config_.pairs.toString()},
                    {"dataSnapshot", set_.snapshotId()},
                    {"epochs", config_.epochs},
                    {"finalLoss", position.epochLosses.empty() ? 0.0 : position.epochLosses.back()},
                    {"epochLosses", position.epochLosses},
                    {"config", config_.toJson()}};
    ResNet& backbone = model->queryEncoder()->backbone();
    backbone.to(torch::kCPU);
    saveEncoder(encoderPath.string(), info, backbone);
  }
  result.completed = true;
  result.encoderDirectory = encoderPath.string();
  return result;
}

}  // namespace comcl::training
