// The comcl index: one SQLite database holding what the plugin and the CLI know about each stored image
// (metadata, decode status, cache slot), its quality, labels, predictions, the patient-level split, model
// versions, training runs and the change cursor. Thread-safe: every public call is serialised on one mutex,
// and every multi-row change runs in one transaction.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "comcl/storage/sqlite.h"

namespace comcl::storage {

enum class DecodeState {
  Decoded,      // pixels are in the image cache
  Skipped,      // not an image (SR, PDF, presentation state, ...): indexed, never an error
  Unsupported,  // a valid image this build cannot decode (e.g. JPEG 2000 without a codec)
  Failed,       // corrupt or invalid input
};
std::string_view toString(DecodeState state);
DecodeState decodeStateFromString(std::string_view text);  // throws std::invalid_argument

struct InstanceRecord {
  std::int64_t id = 0;      // row id, set by the index
  std::string resourceId;   // Orthanc public id, or "sha1:<hex of file bytes>" for files without UIDs
  std::string source;       // file path for offline indexing, "orthanc" for the plugin
  std::string sopInstanceUid;
  std::string seriesInstanceUid;
  std::string studyInstanceUid;
  std::string sopClassUid;
  std::optional<std::string> patientKey;  // PatientID; empty optional when the tag is missing
  std::optional<std::string> studyDate;   // YYYYMMDD
  std::optional<std::string> viewPosition;
  std::optional<std::string> laterality;
  std::optional<std::string> modality;
  std::optional<std::string> bodyPart;
  int rows = 0;
  int cols = 0;
  int frames = 0;
  int bitsStored = 0;
  std::string transferSyntaxUid;
  std::string photometric;
  DecodeState decodeState = DecodeState::Failed;
  std::string decodeReason;    // why it was skipped/unsupported/failed; notes for decoded images
  std::string metadataIssues;  // "; "-separated, e.g. "missing PatientID; missing ViewPosition"
  std::optional<std::int64_t> cacheSlot;
  // Where the image lies inside the padded square cache image (pixels).
  int contentX = 0;
  int contentY = 0;
  int contentWidth = 0;
  int contentHeight = 0;
};

struct QualityRecord {
  std::int64_t instanceId = 0;
  double sharpness = 0;      // variance of the Laplacian, intensities on a 0..255 scale
  double noise = 0;          // estimated noise standard deviation, 0..255 scale
  double contrast = 0;       // RMS contrast (standard deviation), 0..1
  double clipLow = 0;        // fraction of pixels at the black extreme
  double clipHigh = 0;       // fraction of pixels at the white extreme
  double dynamicRange = 0;   // spread between the 1st and 99th percentile, 0..1
  double meanIntensity = 0;  // 0..1
  std::optional<std::string> flag;  // good / usable / reject (set by the plugin's thresholds)
  std::string reasons;              // "; "-separated
};

struct LabelRecord {
  std::string scope;    // "study" or "instance"
  std::string key;      // StudyInstanceUID / Orthanc id for the scope
  std::string finding;  // e.g. "Pleural Effusion"
  double value = 0;     // 1 positive, 0 negative, -1 uncertain
  std::string source;   // where it came from (file name, user)
};

struct PredictionRecord {
  std::int64_t instanceId = 0;
  int modelVersion = 0;
  std::string finding;
  double score = 0;
};

struct ModelVersionRecord {
  int version = 0;
  std::optional<std::int64_t> runId;
  std::string method;       // e.g. "moco-v2+medaug"
  std::string path;         // directory in the model registry
  std::string status;       // candidate / active / retired
  std::string metricsJson;  // evaluation results
  std::string createdAt;
};

struct TrainingRunRecord {
  std::int64_t id = 0;
  std::string jobId;
  std::string state;  // pending / running / succeeded / failed / canceled / interrupted
  std::string requestJson;
  std::string startedAt;
  std::optional<std::string> finishedAt;
  std::string error;
  std::optional<int> modelVersion;
};

struct IndexSummary {
  std::int64_t files = 0;      // instance rows
  std::int64_t images = 0;     // decoded
  std::int64_t patients = 0;   // distinct patient keys among decoded images
  std::int64_t studies = 0;
  std::int64_t series = 0;
  std::map<std::string, std::int64_t> byState;         // decode state -> count
  std::map<std::string, std::int64_t> views;           // view position of decoded images ("" = missing)
  std::map<std::string, std::int64_t> modalities;
  std::map<std::string, std::int64_t> problemReasons;  // reason of skipped/unsupported/failed -> count
  std::map<std::string, std::int64_t> metadataIssues;  // each issue -> count
};

class Index {
 public:
  // Opens or creates the database at `path` (WAL mode) and migrates it to the current schema.
  explicit Index(const std::string& path);

  // --- instances
  // Inserts or replaces the row with the same resourceId; returns its row id. When the row had another
  // cache slot, that slot is released for reuse.
  std::int64_t upsertInstance(const InstanceRecord& record);
  // Same for many rows in one transaction; returns the row ids in order.
  std::vector<std::int64_t> upsertInstances(const std::vector<InstanceRecord>& records);
  std::optional<InstanceRecord> findInstance(std::string_view resourceId);
  std::optional<InstanceRecord> instanceById(std::int64_t id);
  std::vector<InstanceRecord> instancesOfPatient(std::string_view patientKey);
  std::vector<InstanceRecord> instancesOfStudy(std::string_view studyInstanceUid);
  // Removes the row and what hangs off it (quality, predictions); its cache slot becomes reusable.
  bool removeInstance(std::string_view resourceId);
  std::int64_t instanceCount();
  IndexSummary summary();

  // --- image cache slots: a reserved slot is never handed out twice, and freed slots are reused.
  std::int64_t reserveCacheSlot();
  void releaseCacheSlot(std::int64_t slot);  // for a reserved slot that will not be used

  // --- quality
  void putQuality(const QualityRecord& record);
  std::optional<QualityRecord> quality(std::int64_t instanceId);

  // --- labels
  void putLabels(const std::vector<LabelRecord>& labels);
  std::vector<LabelRecord> labels(std::string_view scope, std::string_view key);

  // --- predictions
  void putPredictions(const std::vector<PredictionRecord>& predictions);
  std::vector<PredictionRecord> predictions(std::int64_t instanceId);

  // --- patient-level split ("train" / "val" / "test"), fixed once assigned
  void assignSplit(std::string_view patientKey, std::string_view split, std::int64_t seed);
  std::optional<std::string> splitOf(std::string_view patientKey);

  // --- model registry and training runs
  void putModelVersion(const ModelVersionRecord& record);
  std::optional<ModelVersionRecord> modelVersion(int version);
  std::vector<ModelVersionRecord> modelVersions();
  std::int64_t insertTrainingRun(const TrainingRunRecord& record);
  void updateTrainingRun(const TrainingRunRecord& record);
  std::optional<TrainingRunRecord> trainingRun(std::int64_t id);

  // --- change cursor (last Orthanc change processed) and small named values (e.g. the active model)
  std::optional<std::int64_t> cursor(std::string_view name);
  void setCursor(std::string_view name, std::int64_t seq);
  std::optional<std::string> value(std::string_view name);
  void setValue(std::string_view name, std::string_view value);

  Connection& connection() { return connection_; }  // for tests and migrations; not thread-safe

 private:
  std::int64_t upsertLocked(const InstanceRecord& record);

  std::mutex mutex_;
  Connection connection_;
  std::int64_t nextSlot_ = 0;
  std::vector<std::int64_t> freeSlots_;
};

}  // namespace comcl::storage
