// The comcl index: one SQLite database holding what the plugin and the CLI know about each stored image
// (metadata, decode status, cache slot), its quality, labels, lesion boxes, predictions, the patient-level
// split, model versions, training runs and the change cursor. Thread-safe: every public call is serialised on
// one mutex, and every multi-row change runs in one transaction.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
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
  std::int64_t id = 0;     // row id, set by the index
  std::string resourceId;  // Orthanc public id, or "sha1:<hex of file bytes>" for files without UIDs
  // Orthanc public ids of the parent resources; "" when unknown (offline indexing, rows from schema v1).
  std::string patientResourceId;
  std::string studyResourceId;
  std::string seriesResourceId;
  std::string accessionNumber;  // (0008,0050), "" when absent
  std::string source;           // file path for offline indexing, "orthanc" for the plugin
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
  double sharpness = 0;             // variance of the Laplacian, intensities on a 0..255 scale
  double noise = 0;                 // estimated noise standard deviation, 0..255 scale
  double contrast = 0;              // RMS contrast (standard deviation), 0..1
  double clipLow = 0;               // fraction of pixels at the black extreme
  double clipHigh = 0;              // fraction of pixels at the white extreme
  double dynamicRange = 0;          // spread between the 1st and 99th percentile, 0..1
  double meanIntensity = 0;         // 0..1
  std::optional<std::string> flag;  // good / usable / reject (set by the plugin's thresholds)
  std::string reasons;              // "; "-separated
  // The same measures inside the body region (background and collimation excluded); 0 for rows from v1.
  double bodyClipLow = 0;   // fraction of body pixels at the black extreme
  double bodyClipHigh = 0;  // fraction of body pixels at the white extreme
  double bodyMean = 0;      // mean intensity inside the body, 0..1
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

// The value (Index::value) naming the active model version, which the scorer follows.
constexpr const char* kActiveModelVersionKey = "active_model_version";

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
  std::string detailsJson = "{}";  // stage timings, loss curve, metrics, promotion (the plugin's JSON)
};

// What the plugin wrote for one Orthanc study: the report, and the DICOM SR it stored (if any).
struct StudyAnnotationRecord {
  std::string studyResourceId;  // Orthanc public id of the study (the key)
  std::string studyInstanceUid;
  std::string fingerprint;                 // of the inputs the report was made from (to detect staleness)
  std::optional<int> modelVersion;         // empty: no model was used
  std::optional<std::string> qualityFlag;  // good / usable / reject, or empty
  std::string reportJson;
  std::string srInstanceId;  // Orthanc id of the stored DICOM SR, "" if none
  std::string annotatedAt;   // ISO-8601 UTC; set to now by putStudyAnnotation when empty
};

// A lesion's bounding box on one image, supplied with the labels (CoMCL's lesion patches are cropped
// around such boxes). Coordinates are in the ORIGINAL image's pixels: x in 0..cols to the right, y in
// 0..rows down, edges of pixels (a box covering the whole image is 0, 0, cols, rows), x0 < x1, y0 < y1.
struct LesionBoxRecord {
  std::int64_t instanceId = 0;  // row id; set by the reads, ignored by putLesionBoxes (resourceId is used)
  std::string resourceId;       // the instance the box lies on
  std::string finding;          // e.g. "Nodule"
  double x0 = 0;
  double y0 = 0;
  double x1 = 0;
  double y1 = 0;
  double confidence = 1;  // 0..1; 1 for boxes drawn by a reader
  std::string source;     // where it came from ("boxes:<file>", a user, a detector's name)
};

// Orthanc's resource levels, for removing everything under a deleted resource.
enum class ResourceLevel { Patient, Study, Series, Instance };

struct IndexSummary {
  // Counts over all rows unless marked "decoded": patients/studies/series/views/modalities count decoded
  // images only; empty UIDs and missing patient keys are not counted as a patient/study/series.
  std::int64_t files = 0;     // instance rows
  std::int64_t images = 0;    // decoded
  std::int64_t patients = 0;  // distinct patient keys among decoded images
  std::int64_t studies = 0;
  std::int64_t series = 0;
  std::map<std::string, std::int64_t> byState;         // decode state -> count
  std::map<std::string, std::int64_t> views;           // view position of decoded images ("" = missing)
  std::map<std::string, std::int64_t> modalities;      // modality of decoded images ("" = missing)
  std::map<std::string, std::int64_t> problemReasons;  // reason of skipped/unsupported/failed -> count
  std::map<std::string, std::int64_t> metadataIssues;  // each "; "-separated issue of any row -> count
};

class Index {
 public:
  // Opens or creates the database at `path` (WAL mode) and migrates it to the current schema.
  // Throws DatabaseError when the file is not a database or has a newer schema than this build knows.
  explicit Index(const std::string& path);
  ~Index();
  Index(const Index&) = delete;
  Index& operator=(const Index&) = delete;

  // --- instances
  // Inserts or replaces the row with the same resourceId; returns its row id. A replaced row keeps its id
  // (and so its quality and predictions) and takes every other field from `record`. When the
  // row had another cache slot, that slot is released for reuse. A record's cache slot must not be held by
  // another row (DatabaseError); taking a freed or reserved slot removes it from the free list.
  std::int64_t upsertInstance(const InstanceRecord& record);
  // Same for many rows in one transaction; returns the row ids in order.
  std::vector<std::int64_t> upsertInstances(const std::vector<InstanceRecord>& records);
  std::optional<InstanceRecord> findInstance(std::string_view resourceId);
  std::optional<InstanceRecord> instanceById(std::int64_t id);
  // Rows in id order.
  std::vector<InstanceRecord> instancesOfPatient(std::string_view patientKey);
  std::vector<InstanceRecord> instancesOfStudy(std::string_view studyInstanceUid);
  std::vector<InstanceRecord> instancesOfStudyResource(std::string_view studyResourceId);
  // Every decoded row that has a cache slot, in id order: what training reads.
  std::vector<InstanceRecord> decodedInstances();
  // Points an existing row at `slot` (or none), freeing its previous slot as upsertInstance does (e.g. to
  // attach pixels cached after the row was written). Returns false if there is no such row.
  bool setCacheSlot(std::int64_t instanceId, std::optional<std::int64_t> slot);
  // Removes the row and what hangs off it (quality, predictions); its cache slot becomes reusable.
  bool removeInstance(std::string_view resourceId);
  // Removes, in one transaction, every row under the Orthanc resource `resourceId` of that level (matched by
  // patient/study/series resource id; Instance: the row whose resourceId it is), as removeInstance does
  // (quality and predictions go, cache slots become reusable). Also removes the study annotation of every
  // study left without instance rows by the removal, and for level Study the annotation of `resourceId`
  // even when no row was under it. Returns the removed rows' resource ids in id order (empty for an unknown
  // id). Throws std::invalid_argument for an empty id.
  std::vector<std::string> removeInstancesUnder(ResourceLevel level, std::string_view resourceId);
  // The cache slots held by the instance rows under that Orthanc resource (what removeInstancesUnder would
  // free), in row order: to blank the pixels before the rows go.
  std::vector<std::int64_t> cacheSlotsUnder(ResourceLevel level, std::string_view resourceId);
  std::int64_t instanceCount();
  IndexSummary summary();
  std::map<std::string, std::int64_t> decodeStateCounts();    // decode state name -> rows
  std::map<std::string, std::int64_t> qualityFlagCounts();    // quality flag -> rows ("" = no flag)
  std::map<std::string, std::int64_t> qualityReasonCounts();  // each "; "-separated quality reason -> rows

  // Upserts the row (as upsertInstance) and sets its quality in one transaction, so that a row never lacks
  // the quality written with it: `quality` is stored with instanceId set to the row id, and when it is
  // empty any earlier quality of the row is deleted. Returns the row id.
  std::int64_t putInstanceWithQuality(const InstanceRecord& record,
                                      const std::optional<QualityRecord>& quality);

  // --- image cache slots: a reserved slot is never handed out twice, and freed slots are reused.
  // Hands out the lowest freed slot, else one past every slot in use, freed or reserved in this process.
  std::int64_t reserveCacheSlot();
  // For a reserved slot that will not be used: it goes back to the (persisted) free list. Throws
  // std::logic_error if a row refers to the slot.
  void releaseCacheSlot(std::int64_t slot);

  // --- quality
  void putQuality(const QualityRecord& record);
  std::optional<QualityRecord> quality(std::int64_t instanceId);

  // --- labels
  void putLabels(const std::vector<LabelRecord>& labels);
  std::vector<LabelRecord> labels(std::string_view scope, std::string_view key);
  std::vector<LabelRecord> allLabels();  // ordered by scope, key, finding

  // --- lesion boxes (ON DELETE CASCADE: they go with their instance row)
  // Stores the boxes in one transaction, all or nothing. For every (instance, finding, source) that occurs
  // in `boxes`, the boxes stored before under that triple are replaced by the ones given (other sources'
  // boxes stay). Throws std::invalid_argument, writing nothing, for an unknown instance, an empty finding,
  // a confidence outside 0..1 or a box outside its image (a negative or non-finite coordinate, x1 beyond
  // cols or y1 beyond rows, x1 <= x0, y1 <= y0, or an image whose size is unknown); the message names the
  // instance and the box.
  void putLesionBoxes(const std::vector<LesionBoxRecord>& boxes);
  // The boxes of one finding, by instance row id, then in the order they were stored.
  std::vector<LesionBoxRecord> lesionBoxes(std::string_view finding);
  std::vector<LesionBoxRecord> allLesionBoxes();  // by finding, instance row id, then storage order
  // Removes every box of that finding and source; returns how many went.
  std::int64_t removeLesionBoxes(std::string_view finding, std::string_view source);

  // --- predictions
  void putPredictions(const std::vector<PredictionRecord>& predictions);
  std::vector<PredictionRecord> predictions(std::int64_t instanceId);
  std::vector<PredictionRecord> predictionsOfModel(std::int64_t instanceId, int modelVersion);  // by finding

  // --- study annotations (one per Orthanc study)
  void putStudyAnnotation(const StudyAnnotationRecord& record);  // inserts or replaces by study resource id
  std::optional<StudyAnnotationRecord> studyAnnotation(std::string_view studyResourceId);
  bool removeStudyAnnotation(std::string_view studyResourceId);  // false if there was none
  std::vector<std::string> reportInstanceIds();                  // every non-empty srInstanceId, sorted
  std::int64_t studyAnnotationCount();
  // Every Orthanc study id the index knows (from instance rows or annotations), sorted: for reconciling
  // with Orthanc after deletions the plugin did not see.
  std::vector<std::string> studyResourceIds();
  // The StudyInstanceUIDs of the instances with that AccessionNumber (normally one), sorted.
  std::vector<std::string> studyInstanceUidsWithAccession(std::string_view accessionNumber);

  // --- patient-level split ("train" / "val" / "test"), fixed once assigned
  // Assigning the same split again is a no-op (the first seed stays); another split throws std::logic_error;
  // an unknown split name or empty key throws std::invalid_argument.
  void assignSplit(std::string_view patientKey, std::string_view split, std::int64_t seed);
  // Many at once, all or nothing, in one transaction (pairs of patient key and split).
  void assignSplits(const std::vector<std::pair<std::string, std::string>>& patientSplits, std::int64_t seed);
  std::optional<std::string> splitOf(std::string_view patientKey);
  std::map<std::string, std::string> splits();  // patient key -> split

  // --- model registry and training runs
  void putModelVersion(const ModelVersionRecord& record);
  std::optional<ModelVersionRecord> modelVersion(int version);
  std::vector<ModelVersionRecord> modelVersions();  // by version
  // Makes `version` the active model in one transaction: its status becomes "active", the version active
  // before it (if another) becomes "retired", and the value kActiveModelVersionKey names it; a crash leaves
  // either the old or the new state. Returns the version that was active before (empty: none). Throws
  // DatabaseError for an unknown version. Activating the active version changes nothing.
  std::optional<int> activateModelVersion(int version);
  // createdAt/startedAt default to now (ISO-8601 UTC) when empty. record.id is ignored on insert.
  std::int64_t insertTrainingRun(const TrainingRunRecord& record);
  void updateTrainingRun(const TrainingRunRecord& record);  // throws DatabaseError for an unknown id
  std::optional<TrainingRunRecord> trainingRun(std::int64_t id);
  std::vector<TrainingRunRecord> trainingRuns();  // by id

  // --- change cursor (last Orthanc change processed) and small named values (e.g. the active model)
  std::optional<std::int64_t> cursor(std::string_view name);
  void setCursor(std::string_view name, std::int64_t seq);
  std::optional<std::string> value(std::string_view name);
  void setValue(std::string_view name, std::string_view value);

  Connection& connection() { return connection_; }  // for tests and migrations; not thread-safe

 private:
  // Slot changes made inside a transaction, applied to the in-memory lists only after it commits.
  struct SlotEvent {
    std::int64_t slot;
    bool freed;  // true: went to the free list; false: taken by a row
  };
  std::int64_t upsertLocked(const InstanceRecord& record, std::vector<SlotEvent>& events);
  void changeSlotLocked(std::optional<std::int64_t> oldSlot, std::optional<std::int64_t> newSlot,
                        std::vector<SlotEvent>& events);
  void applySlotEvents(const std::vector<SlotEvent>& events);
  void removeRowLocked(std::int64_t id, std::optional<std::int64_t> slot, std::vector<SlotEvent>& events);
  void putQualityLocked(const QualityRecord& record);
  // Runs a cached two-column "key, count" query into a map (`sql` as for cached()).
  std::map<std::string, std::int64_t> countsLocked(std::string_view sql);
  void assignSplitLocked(std::string_view patientKey, std::string_view split, std::int64_t seed);
  std::vector<InstanceRecord> instancesWhere(const std::string& sql, std::string_view value);
  // Prepared once and kept; `sql` must outlive the index (string literals, static strings).
  Statement& cached(std::string_view sql);
  std::vector<std::string> textColumn(std::string_view sql);  // the first column of every row

  std::mutex mutex_;
  Connection connection_;
  std::unordered_map<std::string_view, Statement> statements_;  // after connection_: finalised first
  std::int64_t nextSlot_ = 0;
  std::set<std::int64_t> freeSlots_;
  std::set<std::int64_t> reserved_;
};

}  // namespace comcl::storage
