#include "model_registry.h"

#include <filesystem>
#include <utility>

#include "comcl/training/scorer.h"

namespace comcl::plugin {

namespace fs = std::filesystem;

ModelRegistry::ModelRegistry(storage::Index& index, std::string modelDirectory)
    : index_(index), modelDirectory_(std::move(modelDirectory)) {}

std::string ModelRegistry::directoryOf(const storage::ModelVersionRecord& record) const {
  const fs::path path(record.path);
  return (path.is_relative() ? fs::path(modelDirectory_) / path : path).string();
}

std::optional<int> activeModelVersion(storage::Index& index) {
  const std::optional<std::string> value = index.value(storage::kActiveModelVersionKey);
  if (!value || value->empty())
    return std::nullopt;
  try {
    return std::stoi(*value);
  } catch (const std::exception&) {
    return std::nullopt;  // the scorer reports the unreadable value in /comcl/status
  }
}

nlohmann::json ModelRegistry::summary(const storage::ModelVersionRecord& record,
                                      std::optional<int> active) const {
  nlohmann::json metrics = nlohmann::json::parse(record.metricsJson, nullptr, false);
  if (metrics.is_discarded())
    metrics = record.metricsJson;  // shown as stored rather than hidden
  // What the run that made it was asked, and by whom (versions registered by hand have no run).
  nlohmann::json request = nullptr;
  if (record.runId) {
    if (const std::optional<storage::TrainingRunRecord> run = index_.trainingRun(*record.runId)) {
      request = nlohmann::json::parse(run->requestJson, nullptr, false);
      if (request.is_discarded())
        request = nullptr;
    }
  }
  const bool asked = request.is_object() && request.contains("RequestedBy");
  return {{"Version", record.version},
          {"Status", record.status},
          {"Active", active == record.version},
          {"Method", record.method},
          {"CreatedAt", record.createdAt},
          {"RunId", record.runId ? nlohmann::json(*record.runId) : nlohmann::json(nullptr)},
          {"TrainingRequest", request},
          {"RequestedBy", asked ? request.at("RequestedBy") : nlohmann::json(nullptr)},
          {"Metrics", metrics},
          {"Path", directoryOf(record)}};
}

nlohmann::json ModelRegistry::list() {
  const std::optional<int> active = activeModelVersion(index_);
  nlohmann::json models = nlohmann::json::array();
  for (const storage::ModelVersionRecord& record : index_.modelVersions())
    models.push_back(summary(record, active));
  return {{"Active", active ? nlohmann::json(*active) : nlohmann::json(nullptr)}, {"Models", models}};
}

std::optional<nlohmann::json> ModelRegistry::describe(int version) {
  const std::optional<storage::ModelVersionRecord> record = index_.modelVersion(version);
  if (!record)
    return std::nullopt;
  nlohmann::json json = summary(*record, activeModelVersion(index_));
  try {
    const training::ModelFile model = training::readModelFile(directoryOf(*record));
    json["Model"] = training::toJson(model);
  } catch (const std::exception& e) {
    json["ModelError"] = e.what();
  }
  json["Weights"] = "/comcl/models/" + std::to_string(version) + "/weights";
  return json;
}

std::optional<nlohmann::json> ModelRegistry::activate(int version) {
  const std::optional<storage::ModelVersionRecord> record = index_.modelVersion(version);
  if (!record)
    return std::nullopt;
  const std::string directory = directoryOf(*record);
  try {
    const auto scorer = training::loadScorer(directory);  // refuse what the scorer could not use
    if (scorer->modelVersion() != version)
      throw std::runtime_error(directory + " holds model version " + std::to_string(scorer->modelVersion()));
  } catch (const std::exception& e) {
    throw ModelUnusable("model version " + std::to_string(version) + " cannot be activated: " + e.what());
  }
  const std::optional<int> previous = index_.activateModelVersion(version);
  return nlohmann::json{{"Active", version},
                        {"Previous", previous ? nlohmann::json(*previous) : nlohmann::json(nullptr)}};
}

std::optional<std::string> ModelRegistry::weights(int version) {
  const std::optional<storage::ModelVersionRecord> record = index_.modelVersion(version);
  if (!record)
    return std::nullopt;
  try {
    return training::pytorchWeights(directoryOf(*record));
  } catch (const std::exception& e) {
    throw ModelUnusable("model version " + std::to_string(version) + " has no readable weights: " + e.what());
  }
}

}  // namespace comcl::plugin
