#include "training_run.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>

#include "comcl/training/comcl_views.h"
#include "comcl/training/dataset.h"
#include "comcl/training/evaluation.h"
#include "comcl/training/lesions.h"
#include "comcl/training/pairs.h"
#include "comcl/training/pretrain.h"

namespace comcl::plugin {

namespace fs = std::filesystem;

namespace {

const std::set<std::string> kMethods = {"medaug", "moco", "comcl", "supervised"};

int integerField(const nlohmann::json& value, const std::string& name, int low, int high) {
  if (!value.is_number_integer())
    throw std::invalid_argument(name + " must be an integer, not " + std::string(value.type_name()));
  const long long number = value.get<long long>();
  if (number < low || number > high)
    throw std::invalid_argument(name + " must be between " + std::to_string(low) + " and " +
                                std::to_string(high) + ", not " + std::to_string(number));
  return static_cast<int>(number);
}

std::string stringField(const nlohmann::json& value, const std::string& name) {
  if (!value.is_string() || value.get<std::string>().empty())
    throw std::invalid_argument(name + " must be a non-empty string, not " + value.dump());
  return value.get<std::string>();
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// CoMCL's lesion and healthy images (training patients only) and the boxes its lesion patches are cut around.
training::ComclRoles comclRoles(const TrainRequest& request, storage::Index& index,
                                const training::TrainingSet& set, const storage::ImageCache& cache,
                                const std::map<std::string, std::string>& split,
                                const std::atomic<bool>* cancel, nlohmann::json& summary) {
  std::string source = request.lesionSource;
  if (source == "auto")
    source = index.lesionBoxes(request.lesionLabel).empty() ? "none" : "stored";
  summary = {{"Label", request.lesionLabel}, {"Source", source}};
  if (source == "none") {
    training::ComclRoles roles = training::comclRolesFromLabels(set, request.lesionLabel, &split);
    roles.validate(set.size());
    summary["LesionImages"] = roles.lesionImages.size();
    summary["HealthyImages"] = roles.healthyImages.size();
    return roles;
  }
  training::LesionConfig config;
  config.label = request.lesionLabel;
  config.source = training::lesionSourceKindFromString(source);
  config.device = request.device;
  config.seed = request.seed;
  config.validate();
  const training::LesionProposals proposals = training::proposeLesions(index, set, cache, config, {}, cancel);
  summary["LesionImages"] = proposals.lesionImages.size();
  summary["HealthyImages"] = proposals.healthyImages.size();
  summary["BoxesProposed"] = proposals.proposed;
  summary["BoxesKept"] = proposals.kept;
  summary["BoxesDropped"] = proposals.dropped;
  summary["LesionImagesWithoutBox"] = proposals.lesionImagesWithoutBox;
  training::ComclRoles roles = training::toComclRoles(proposals);
  roles.validate(set.size());
  return roles;
}

// The request's labels; when it named none (every declared label), those no image carries yet are left out.
std::vector<std::string> labelsToTrain(const TrainRequest& request, const training::TrainingSet& set) {
  if (!request.labelsDefaulted)
    return request.labels;
  const std::vector<std::string> present = set.findings();
  std::vector<std::string> labels;
  for (const std::string& label : request.labels) {
    if (std::find(present.begin(), present.end(), label) != present.end())
      labels.push_back(label);
  }
  if (labels.empty())
    throw training::DataError(
        "no image carries a label declared in Comcl.Labels yet: label studies first "
        "(PUT /comcl/studies/{id}/labels, POST /comcl/labels)");
  return labels;
}

}  // namespace

TrainRequest TrainRequest::fromJson(const nlohmann::json& body, const LabelSet& declared) {
  if (!body.is_object())
    throw std::invalid_argument(std::string("the body must be a JSON object, not ") + body.type_name());
  TrainRequest r;
  for (const auto& item : body.items()) {
    const std::string& key = item.key();
    const nlohmann::json& value = item.value();
    if (key == "Method") {
      r.method = stringField(value, key);
      if (kMethods.count(r.method) == 0)
        throw std::invalid_argument("Method must be medaug, moco, comcl or supervised, not " + r.method);
    } else if (key == "Strategy") {
      r.strategy = stringField(value, key);
      training::PairStrategy::parse(r.strategy);  // throws with what is wrong
    } else if (key == "Epochs") {
      r.epochs = integerField(value, key, 1, 10000);
    } else if (key == "ImageSize") {
      r.imageSize = integerField(value, key, 16, 2048);
    } else if (key == "BatchSize") {
      r.batchSize = integerField(value, key, 2, 4096);
    } else if (key == "Labels") {
      if (!value.is_array() || value.empty())
        throw std::invalid_argument("Labels must be a non-empty array of label names");
      for (const nlohmann::json& label : value)
        r.labels.push_back(stringField(label, "each of Labels"));
    } else if (key == "LesionLabel") {
      r.lesionLabel = stringField(value, key);
    } else if (key == "LesionSource") {
      r.lesionSource = stringField(value, key);
      if (r.lesionSource != "auto" && r.lesionSource != "stored" && r.lesionSource != "cam" &&
          r.lesionSource != "none")
        throw std::invalid_argument("LesionSource must be auto, stored, cam or none, not " + r.lesionSource);
    } else if (key == "Device") {
      r.device = stringField(value, key);
    } else if (key == "Seed") {
      r.seed = static_cast<std::uint64_t>(integerField(value, key, 0, 1 << 30));
    } else {
      throw std::invalid_argument("unknown field '" + key +
                                  "' (known: Method, Strategy, Epochs, ImageSize, BatchSize, Labels, "
                                  "LesionLabel, LesionSource, Device, Seed)");
    }
  }
  if (r.labels.empty()) {
    for (const auto& [name, grades] : declared)
      r.labels.push_back(name);
    r.labelsDefaulted = true;
  }
  std::string firstBinary;
  for (const std::string& label : r.labels) {
    const auto it = declared.find(label);
    if (it == declared.end())
      throw std::invalid_argument("label '" + label + "' is not declared in Comcl.Labels");
    if (it->second == 2 && firstBinary.empty())
      firstBinary = label;
  }
  if (firstBinary.empty())
    throw std::invalid_argument(
        "no binary label among the labels to train: the model scores binary findings (graded labels are "
        "evaluated beside them, with kappa); declare one in Comcl.Labels");
  if (r.method == "comcl" && r.lesionLabel.empty())
    r.lesionLabel = firstBinary;
  return r;
}

nlohmann::json TrainRequest::toJson() const {
  return {{"Method", method},           {"Strategy", strategy},
          {"Epochs", epochs},           {"ImageSize", imageSize},
          {"BatchSize", batchSize},     {"Labels", labels},
          {"LesionLabel", lesionLabel}, {"LesionSource", lesionSource},
          {"Device", device},           {"Seed", seed},
          {"RequestedBy", requestedBy}};
}

TrainOutcome runTraining(const TrainRequest& request, storage::Index& index, const storage::ImageCache& cache,
                         const std::string& modelDirectory, const std::string& runDirectory,
                         std::int64_t runId, const std::function<void(const TrainProgress&)>& progress,
                         const std::atomic<bool>* cancel) {
  const auto report = [&](TrainProgress p) {
    if (progress)
      progress(p);
  };
  const auto checkCancel = [&] {
    if (cancel && cancel->load())
      throw training::DataError("cancelled");
  };
  TrainOutcome outcome;

  auto started = std::chrono::steady_clock::now();
  report({"snapshot", 0.0});
  const training::TrainingSet set = training::TrainingSet::fromIndex(index);
  const auto split = training::ensurePatientSplit(index, set, training::SplitConfig{});
  const std::vector<std::string> labels = labelsToTrain(request, set);
  outcome.stageSeconds["snapshot"] = secondsSince(started);
  checkCancel();

  training::EncoderSource source;
  source.channels = cache.format().channels;
  training::ProtocolConfig protocol;
  protocol.labels = labels;
  protocol.draws = 1;
  protocol.seed = request.seed;
  protocol.imageSize = request.imageSize;
  protocol.device = request.device;
  protocol.byQuality = true;

  const bool pretrains = request.method != "supervised";
  started = std::chrono::steady_clock::now();
  if (pretrains) {
    training::PretrainConfig config = training::PretrainConfig::forMethod(request.method, request.imageSize);
    config.epochs = request.epochs;
    config.batchSize = request.batchSize;
    config.device = request.device;
    config.seed = request.seed;
    config.moco.channels = cache.format().channels;
    if (!request.strategy.empty())
      config.pairs = training::PairStrategy::parse(request.strategy);
    config.moco.queueSize = config.queueSizeFor(set.size());
    training::ComclRoles roles;
    if (request.method == "comcl") {
      report({"lesions", 0.03});
      roles = comclRoles(request, index, set, cache, split, cancel, outcome.lesions);
      checkCancel();
    }
    training::Pretrainer trainer(set, cache, config, runDirectory, roles);
    const training::PretrainResult result = trainer.run(
        [&](const training::PretrainProgress& p) {
          const double done = p.totalSteps > 0 ? static_cast<double>(p.globalStep) / p.totalSteps : 0;
          report({"pre-train", 0.05 + 0.8 * done, p.epoch, p.epochs, p.loss, p.epochLoss, p.imagesPerSecond});
        },
        cancel);
    checkCancel();
    if (!result.completed)
      throw training::DataError("pre-training stopped before its last epoch");
    source.directory = result.encoderDirectory;
    outcome.epochLosses = result.epochLosses;
    outcome.imagesPerSecond = result.imagesPerSecond;
  } else {
    protocol.mode = "finetune";
    protocol.finetuneEpochs = request.epochs;
  }
  outcome.stageSeconds["pre-train"] = secondsSince(started);

  started = std::chrono::steady_clock::now();
  report({"heads", 0.85});
  const training::ProtocolResult metrics =
      training::runProtocol(set, cache, split, source, protocol, {}, cancel);
  checkCancel();
  outcome.metrics = metrics.toJson();
  outcome.stageSeconds["heads"] = secondsSince(started);

  started = std::chrono::steady_clock::now();
  report({"register", 0.95});
  int version = 1;
  for (const storage::ModelVersionRecord& record : index.modelVersions())
    version = std::max(version, record.version + 1);
  while (fs::exists(fs::path(modelDirectory) / ("v" + std::to_string(version))))
    ++version;  // a directory nothing registers (written by hand, or by a run that crashed) is left alone
  const std::string directoryName = "v" + std::to_string(version);
  outcome.modelDirectory = (fs::path(modelDirectory) / directoryName).string();
  training::trainAndSaveModel(set, cache, split, source, protocol, metrics, version, outcome.modelDirectory);
  storage::ModelVersionRecord record;
  record.version = version;
  record.runId = runId;
  record.method = request.method;
  record.path = directoryName;
  record.status = "candidate";
  record.metricsJson = outcome.metrics.dump();
  try {
    index.putModelVersion(record);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(outcome.modelDirectory, ignored);  // no unregistered model directory stays behind
    throw;
  }
  outcome.modelVersion = version;
  outcome.stageSeconds["register"] = secondsSince(started);
  report({"register", 1.0});
  return outcome;
}

}  // namespace comcl::plugin
