// The model registry as the REST API shows it (GET /comcl/models, /comcl/models/{v}, the weights download)
// and activation (POST /comcl/models/{v}/activate, rollback included). The versions live in the index
// (model_versions); each one's files in a model directory (training/scorer.h), a relative path resolved
// against the configured ModelDirectory. No Orthanc dependency, so unit tests drive it directly.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

#include "comcl/storage/index.h"

namespace comcl::plugin {

// A version that exists but cannot be used (its directory is missing or does not load).
class ModelUnusable : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The version the index names as active; empty when none is (or the value is unreadable).
std::optional<int> activeModelVersion(storage::Index& index);

class ModelRegistry {
 public:
  // The index must outlive the registry.
  ModelRegistry(storage::Index& index, std::string modelDirectory);

  // {"Active": version or null, "Models": [{"Version", "Status", "Active", "Method", "CreatedAt", "RunId",
  // "Metrics", "Path"}, ...]} by version.
  nlohmann::json list();
  // One version as in list(), plus "Model" (model.json: findings, architecture, input size, channels,
  // normalisation, training provenance) or "ModelError" when model.json cannot be read, and "Weights" (the
  // download route). Empty for an unknown version.
  std::optional<nlohmann::json> describe(int version);
  // Loads the version's model directory (a model that does not load is refused with ModelUnusable and
  // nothing changes), then makes it the active version (Index::activateModelVersion). Returns
  // {"Active": version, "Previous": version or null}; empty for an unknown version.
  std::optional<nlohmann::json> activate(int version);
  // The version's weights as a torch.load-able file (training::pytorchWeights); empty for an unknown version,
  // ModelUnusable when the directory does not load.
  std::optional<std::string> weights(int version);

  std::string directoryOf(const storage::ModelVersionRecord& record) const;

 private:
  nlohmann::json summary(const storage::ModelVersionRecord& record, std::optional<int> active) const;

  storage::Index& index_;
  std::string modelDirectory_;
};

}  // namespace comcl::plugin
