// The plugin's configuration section ("Comcl" in Orthanc's merged configuration), checked strictly: an
// unknown key, a wrong type or an impossible value stops start-up with a message naming the key, rather
// than running on a silent default.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include "comcl/imaging/quality_flags.h"
#include "study_labels.h"

namespace comcl::plugin {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Names of the study metadata the plugin writes (Orthanc's "UserMetadata" must declare them) and of its
// report attachment ("UserContentType"). The numbers are only suggestions for the admin's configuration.
struct ResultNames {
  static constexpr const char* kQualityFlag = "ComclQuality";
  static constexpr const char* kQualityReasons = "ComclQualityReasons";
  static constexpr const char* kModelVersion = "ComclModel";
  static constexpr const char* kScores = "ComclScores";
  static constexpr const char* kReportAttachment = "comcl-report";
};

struct PluginConfig {
  std::string databasePath;    // the comcl index (SQLite); its image cache lies beside it
  std::string cachePath;       // the image cache file
  std::string modelDirectory;  // model registry root; relative model paths are resolved against it
  int imageSize = 256;    // cached images are imageSize x imageSize (8-bit); fixed when the cache is created
  int imageChannels = 1;  // 1: grey (colour becomes luminance), 3: RGB (fundus); fixed like imageSize
  int workers = 2;        // ingest threads (decode, cache, quality)
  int queueCapacity = 512;  // instances waiting for ingest; beyond it, catch-up from /changes takes over
  int catchUpIntervalSeconds = 10;  // how often the change log is re-read to pick up what the queue dropped
  int scoreBatchSize = 32;          // images per forward pass of the diagnosis model
  bool structuredReport = false;    // also store a DICOM SR with the results in each study
  // Orthanc users (RegisteredUsers, HTTP Basic) allowed to change what the plugin does: activate models (and,
  // later, train and label). Empty: every user Orthanc lets in may. Others keep read access.
  std::optional<std::set<std::string>> privilegedUsers;
  // A version a training run registers becomes active: "always", "if-better" (its mean held-out AUC beats
  // the active version's on the labels both were evaluated on, or no version is active) or "never".
  std::string promotion = "if-better";
  bool rescoreOnActivation = true;  // activating a version re-scores every study of the archive (a job)
  std::string runDirectory;         // training runs' checkpoints; default: "runs" beside the database
  LabelSet labels;  // Comcl.Labels: the labels studies may be given through REST (name -> grades)
  imaging::QualityThresholds quality;

  // From Orthanc's own configuration: which of our metadata names are declared, whether our attachment
  // name is declared.
  std::set<std::string> declaredMetadata;
  bool attachmentDeclared = false;
};

// `orthanc` is Orthanc's whole merged configuration. Relative paths are resolved against `workingDir`
// (Orthanc's own current directory), so that the log shows where the database really is.
PluginConfig parsePluginConfig(const nlohmann::json& orthanc, const std::string& workingDir);

// The "Comcl" keys this version knows, for messages and docs.
const std::set<std::string>& knownConfigKeys();

}  // namespace comcl::plugin
