#include "comcl/storage/index.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include "comcl/storage/schema.h"

namespace comcl::storage {
namespace {

// ISO-8601 UTC with milliseconds, computed by SQLite inside the statement.
#define COMCL_NOW "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

const std::string kInstanceColumns =
    "id, resource_id, source, sop_instance_uid, series_instance_uid, study_instance_uid, sop_class_uid,"
    " patient_key, study_date, view_position, laterality, modality, body_part, image_rows, image_cols, "
    "frames,"
    " bits_stored, transfer_syntax_uid, photometric, decode_state, decode_reason, metadata_issues, "
    "cache_slot,"
    " content_x, content_y, content_width, content_height, patient_resource_id, study_resource_id,"
    " series_resource_id, accession_number";
// The same fields in ?1..?30 order, for INSERT and UPDATE.
const std::string kInsertInstance =
    "INSERT INTO instances (resource_id, source, sop_instance_uid, series_instance_uid, study_instance_uid,"
    " sop_class_uid, patient_key, study_date, view_position, laterality, modality, body_part, image_rows,"
    " image_cols, frames, bits_stored, transfer_syntax_uid, photometric, decode_state, decode_reason,"
    " metadata_issues, cache_slot, content_x, content_y, content_width, content_height, patient_resource_id,"
    " study_resource_id, series_resource_id, accession_number, created_at, updated_at)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,"
    " ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, " COMCL_NOW ", " COMCL_NOW ")";
const std::string kUpdateInstance =
    "UPDATE instances SET resource_id = ?1, source = ?2, sop_instance_uid = ?3, series_instance_uid = ?4,"
    " study_instance_uid = ?5, sop_class_uid = ?6, patient_key = ?7, study_date = ?8, view_position = ?9,"
    " laterality = ?10, modality = ?11, body_part = ?12, image_rows = ?13, image_cols = ?14, frames = ?15,"
    " bits_stored = ?16, transfer_syntax_uid = ?17, photometric = ?18, decode_state = ?19,"
    " decode_reason = ?20, metadata_issues = ?21, cache_slot = ?22, content_x = ?23, content_y = ?24,"
    " content_width = ?25, content_height = ?26, patient_resource_id = ?27, study_resource_id = ?28,"
    " series_resource_id = ?29, accession_number = ?30, updated_at = " COMCL_NOW " WHERE id = ?31";
const std::string kSelectSlotByResource = "SELECT id, cache_slot FROM instances WHERE resource_id = ?";
const std::string kSelectSlotById = "SELECT cache_slot FROM instances WHERE id = ?";
const std::string kSelectByResource = "SELECT " + kInstanceColumns + " FROM instances WHERE resource_id = ?";
const std::string kSelectById = "SELECT " + kInstanceColumns + " FROM instances WHERE id = ?";
const std::string kSelectByPatient =
    "SELECT " + kInstanceColumns + " FROM instances WHERE patient_key = ? ORDER BY id";
const std::string kSelectByStudy =
    "SELECT " + kInstanceColumns + " FROM instances WHERE study_instance_uid = ? ORDER BY id";
const std::string kSelectDecoded =
    "SELECT " + kInstanceColumns +
    " FROM instances WHERE decode_state = ? AND cache_slot IS NOT NULL ORDER BY id";
const std::string kSelectByStudyResource =
    "SELECT " + kInstanceColumns + " FROM instances WHERE study_resource_id = ? ORDER BY id";
// Rows under an Orthanc resource, for removeInstancesUnder: id, resource_id, cache_slot, study_resource_id.
#define COMCL_ROWS_UNDER "SELECT id, resource_id, cache_slot, study_resource_id FROM instances WHERE "
const char* const kRowsUnderPatient = COMCL_ROWS_UNDER "patient_resource_id = ? ORDER BY id";
const char* const kRowsUnderStudy = COMCL_ROWS_UNDER "study_resource_id = ? ORDER BY id";
const char* const kRowsUnderSeries = COMCL_ROWS_UNDER "series_resource_id = ? ORDER BY id";
const char* const kRowsUnderInstance = COMCL_ROWS_UNDER "resource_id = ? ORDER BY id";
#undef COMCL_ROWS_UNDER
const char* const kDeleteAnnotation = "DELETE FROM study_annotations WHERE study_resource_id = ?";
const char* const kCountByState = "SELECT decode_state, COUNT(*) FROM instances GROUP BY decode_state";
const char* const kSelectPredictionsOfModel =
    "SELECT instance_id, model_version, finding, score FROM predictions WHERE instance_id = ?"
    " AND model_version = ? ORDER BY finding";
const std::string kFreeSlot =
    "INSERT OR IGNORE INTO free_cache_slots (slot, freed_at) VALUES (?, " COMCL_NOW ")";
const std::string kTakeSlot = "DELETE FROM free_cache_slots WHERE slot = ?";
const std::string kSetSlot = "UPDATE instances SET cache_slot = ?, updated_at = " COMCL_NOW " WHERE id = ?";

// Resets a cached statement when leaving scope, so it holds no read snapshot and no stale bindings.
class Use {
 public:
  explicit Use(Statement& statement) : statement_(statement) {}
  ~Use() { statement_.reset(); }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;
  Statement* operator->() { return &statement_; }
  Statement& operator*() { return statement_; }

 private:
  Statement& statement_;
};

void bindRecord(Statement& s, const InstanceRecord& r) {
  s.bind(1, r.resourceId)
      .bind(2, r.source)
      .bind(3, r.sopInstanceUid)
      .bind(4, r.seriesInstanceUid)
      .bind(5, r.studyInstanceUid)
      .bind(6, r.sopClassUid)
      .bind(7, r.patientKey)
      .bind(8, r.studyDate)
      .bind(9, r.viewPosition)
      .bind(10, r.laterality)
      .bind(11, r.modality)
      .bind(12, r.bodyPart)
      .bind(13, r.rows)
      .bind(14, r.cols)
      .bind(15, r.frames)
      .bind(16, r.bitsStored)
      .bind(17, r.transferSyntaxUid)
      .bind(18, r.photometric)
      .bind(19, toString(r.decodeState))
      .bind(20, r.decodeReason)
      .bind(21, r.metadataIssues)
      .bind(22, r.cacheSlot)
      .bind(23, r.contentX)
      .bind(24, r.contentY)
      .bind(25, r.contentWidth)
      .bind(26, r.contentHeight)
      .bind(27, r.patientResourceId)
      .bind(28, r.studyResourceId)
      .bind(29, r.seriesResourceId)
      .bind(30, r.accessionNumber);
}

InstanceRecord readRecord(const Statement& s) {
  InstanceRecord r;
  r.id = s.columnInt(0);
  r.resourceId = s.columnText(1);
  r.source = s.columnText(2);
  r.sopInstanceUid = s.columnText(3);
  r.seriesInstanceUid = s.columnText(4);
  r.studyInstanceUid = s.columnText(5);
  r.sopClassUid = s.columnText(6);
  r.patientKey = s.columnOptionalText(7);
  r.studyDate = s.columnOptionalText(8);
  r.viewPosition = s.columnOptionalText(9);
  r.laterality = s.columnOptionalText(10);
  r.modality = s.columnOptionalText(11);
  r.bodyPart = s.columnOptionalText(12);
  r.rows = static_cast<int>(s.columnInt(13));
  r.cols = static_cast<int>(s.columnInt(14));
  r.frames = static_cast<int>(s.columnInt(15));
  r.bitsStored = static_cast<int>(s.columnInt(16));
  r.transferSyntaxUid = s.columnText(17);
  r.photometric = s.columnText(18);
  r.decodeState = decodeStateFromString(s.columnText(19));
  r.decodeReason = s.columnText(20);
  r.metadataIssues = s.columnText(21);
  r.cacheSlot = s.columnOptionalInt(22);
  r.contentX = static_cast<int>(s.columnInt(23));
  r.contentY = static_cast<int>(s.columnInt(24));
  r.contentWidth = static_cast<int>(s.columnInt(25));
  r.contentHeight = static_cast<int>(s.columnInt(26));
  r.patientResourceId = s.columnText(27);
  r.studyResourceId = s.columnText(28);
  r.seriesResourceId = s.columnText(29);
  r.accessionNumber = s.columnText(30);
  return r;
}

void validate(const InstanceRecord& r) {
  if (r.resourceId.empty()) {
    throw std::invalid_argument("instance record without a resource id");
  }
  if (r.cacheSlot && *r.cacheSlot < 0) {
    throw std::invalid_argument("negative cache slot for " + r.resourceId);
  }
}

void validateSlot(std::int64_t slot) {
  if (slot < 0) {
    throw std::invalid_argument("negative cache slot " + std::to_string(slot));
  }
}

bool isSplitName(std::string_view split) {
  return split == "train" || split == "val" || split == "test";
}

ModelVersionRecord readModel(const Statement& s) {
  ModelVersionRecord m;
  m.version = static_cast<int>(s.columnInt(0));
  m.runId = s.columnOptionalInt(1);
  m.method = s.columnText(2);
  m.path = s.columnText(3);
  m.status = s.columnText(4);
  m.metricsJson = s.columnText(5);
  m.createdAt = s.columnText(6);
  return m;
}

// Adds each item of every "; "-separated list to `into`, weighted by the list's count (items trimmed of
// spaces; empty items skipped).
void countListItems(const std::map<std::string, std::int64_t>& lists,
                    std::map<std::string, std::int64_t>& into) {
  for (const auto& [list, count] : lists) {
    std::size_t start = 0;
    while (start <= list.size()) {
      std::size_t end = list.find(';', start);
      if (end == std::string::npos) {
        end = list.size();
      }
      std::size_t first = start;
      std::size_t last = end;
      while (first < last && list[first] == ' ') {
        ++first;
      }
      while (last > first && list[last - 1] == ' ') {
        --last;
      }
      if (last > first) {
        into[list.substr(first, last - first)] += count;
      }
      start = end + 1;
    }
  }
}

const char* rowsUnderSql(ResourceLevel level) {
  switch (level) {
    case ResourceLevel::Patient:
      return kRowsUnderPatient;
    case ResourceLevel::Study:
      return kRowsUnderStudy;
    case ResourceLevel::Series:
      return kRowsUnderSeries;
    case ResourceLevel::Instance:
      return kRowsUnderInstance;
  }
  throw std::invalid_argument("unknown resource level");
}

StudyAnnotationRecord readAnnotation(const Statement& s) {
  StudyAnnotationRecord a;
  a.studyResourceId = s.columnText(0);
  a.studyInstanceUid = s.columnText(1);
  a.fingerprint = s.columnText(2);
  if (auto version = s.columnOptionalInt(3)) {
    a.modelVersion = static_cast<int>(*version);
  }
  a.qualityFlag = s.columnOptionalText(4);
  a.reportJson = s.columnText(5);
  a.srInstanceId = s.columnText(6);
  a.annotatedAt = s.columnText(7);
  return a;
}

TrainingRunRecord readRun(const Statement& s) {
  TrainingRunRecord r;
  r.id = s.columnInt(0);
  r.jobId = s.columnText(1);
  r.state = s.columnText(2);
  r.requestJson = s.columnText(3);
  r.startedAt = s.columnText(4);
  r.finishedAt = s.columnOptionalText(5);
  r.error = s.columnText(6);
  if (auto version = s.columnOptionalInt(7)) {
    r.modelVersion = static_cast<int>(*version);
  }
  r.detailsJson = s.columnText(8);
  return r;
}

std::string describeBox(const LesionBoxRecord& b) {
  std::ostringstream text;
  text << "lesion box (" << b.x0 << ", " << b.y0 << ", " << b.x1 << ", " << b.y1 << ") of '" << b.finding
       << "' on instance " << b.resourceId;
  return text.str();
}

// Throws std::invalid_argument unless the box lies inside an image of cols x rows pixels.
void validateBox(const LesionBoxRecord& b, std::int64_t cols, std::int64_t rows) {
  if (b.finding.empty())
    throw std::invalid_argument(describeBox(b) + ": the finding is empty");
  if (!(b.confidence >= 0 && b.confidence <= 1))
    throw std::invalid_argument(describeBox(b) + ": confidence " + std::to_string(b.confidence) +
                                " is not in 0..1");
  if (cols <= 0 || rows <= 0)
    throw std::invalid_argument(describeBox(b) + ": the image's size is unknown (not decoded?)");
  const bool finite =
      std::isfinite(b.x0) && std::isfinite(b.y0) && std::isfinite(b.x1) && std::isfinite(b.y1);
  const auto width = static_cast<double>(cols);
  const auto height = static_cast<double>(rows);
  if (!finite || b.x0 < 0 || b.y0 < 0 || b.x1 > width || b.y1 > height || b.x1 <= b.x0 || b.y1 <= b.y0) {
    const std::string c = std::to_string(cols);
    const std::string r = std::to_string(rows);
    throw std::invalid_argument(describeBox(b) + " is outside the image of " + c + "x" + r +
                                " pixels (needs 0 <= x0 < x1 <= " + c + " and 0 <= y0 < y1 <= " + r + ")");
  }
}

LesionBoxRecord readBox(const Statement& s) {
  LesionBoxRecord b;
  b.instanceId = s.columnInt(0);
  b.resourceId = s.columnText(1);
  b.finding = s.columnText(2);
  b.x0 = s.columnDouble(3);
  b.y0 = s.columnDouble(4);
  b.x1 = s.columnDouble(5);
  b.y1 = s.columnDouble(6);
  b.confidence = s.columnDouble(7);
  b.source = s.columnText(8);
  return b;
}

#define COMCL_SELECT_BOXES                                                                              \
  "SELECT b.instance_id, i.resource_id, b.finding, b.x0, b.y0, b.x1, b.y1, b.confidence, b.source FROM" \
  " lesion_boxes b JOIN instances i ON i.id = b.instance_id "
const char* const kSelectBoxesOfFinding =
    COMCL_SELECT_BOXES "WHERE b.finding = ? ORDER BY b.instance_id, b.id";
const char* const kSelectAllBoxes = COMCL_SELECT_BOXES "ORDER BY b.finding, b.instance_id, b.id";
#undef COMCL_SELECT_BOXES

}  // namespace

std::string_view toString(DecodeState state) {
  switch (state) {
    case DecodeState::Decoded:
      return "decoded";
    case DecodeState::Skipped:
      return "skipped";
    case DecodeState::Unsupported:
      return "unsupported";
    case DecodeState::Failed:
      return "failed";
  }
  return "failed";
}

DecodeState decodeStateFromString(std::string_view text) {
  if (text == "decoded") {
    return DecodeState::Decoded;
  }
  if (text == "skipped") {
    return DecodeState::Skipped;
  }
  if (text == "unsupported") {
    return DecodeState::Unsupported;
  }
  if (text == "failed") {
    return DecodeState::Failed;
  }
  throw std::invalid_argument("unknown decode state '" + std::string(text) + "'");
}

// --- Index

Index::Index(const std::string& path) : connection_(path) {
  migrate(connection_);
  // Larger page cache: the per-patient/per-study indexes of a million rows stay in memory.
  connection_.execScript("PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;");
  Statement free = connection_.prepare("SELECT slot FROM free_cache_slots");
  while (free.step()) {
    freeSlots_.insert(free.columnInt(0));
  }
}

Index::~Index() = default;

Statement& Index::cached(std::string_view sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    it = statements_.emplace(sql, connection_.prepare(sql)).first;
  }
  return it->second;
}

void Index::applySlotEvents(const std::vector<SlotEvent>& events) {
  for (const SlotEvent& event : events) {
    if (event.freed) {
      freeSlots_.insert(event.slot);
    } else {
      freeSlots_.erase(event.slot);
      reserved_.erase(event.slot);
    }
  }
}

void Index::changeSlotLocked(std::optional<std::int64_t> oldSlot, std::optional<std::int64_t> newSlot,
                             std::vector<SlotEvent>& events) {
  if (oldSlot && oldSlot != newSlot) {
    Use free(cached(kFreeSlot));
    free->bind(1, *oldSlot).run();
    events.push_back({*oldSlot, true});
  }
  if (newSlot && oldSlot != newSlot) {
    Use take(cached(kTakeSlot));
    take->bind(1, *newSlot).run();
    events.push_back({*newSlot, false});
  }
}

std::int64_t Index::upsertLocked(const InstanceRecord& record, std::vector<SlotEvent>& events) {
  validate(record);
  std::optional<std::int64_t> existingId;
  std::optional<std::int64_t> oldSlot;
  {
    Use find(cached(kSelectSlotByResource));
    find->bind(1, record.resourceId);
    if (find->step()) {
      existingId = find->columnInt(0);
      oldSlot = find->columnOptionalInt(1);
    }
  }
  std::int64_t id = 0;
  if (existingId) {
    Use update(cached(kUpdateInstance));
    bindRecord(*update, record);
    update->bind(31, *existingId).run();
    id = *existingId;
  } else {
    Use insert(cached(kInsertInstance));
    bindRecord(*insert, record);
    insert->run();
    id = connection_.lastInsertRowId();
  }
  changeSlotLocked(oldSlot, record.cacheSlot, events);
  return id;
}

std::int64_t Index::upsertInstance(const InstanceRecord& record) {
  std::lock_guard lock(mutex_);
  std::vector<SlotEvent> events;
  Transaction transaction(connection_);
  const std::int64_t id = upsertLocked(record, events);
  transaction.commit();
  applySlotEvents(events);
  return id;
}

std::vector<std::int64_t> Index::upsertInstances(const std::vector<InstanceRecord>& records) {
  std::lock_guard lock(mutex_);
  std::vector<SlotEvent> events;
  std::vector<std::int64_t> ids;
  ids.reserve(records.size());
  Transaction transaction(connection_);
  for (const InstanceRecord& record : records) {
    ids.push_back(upsertLocked(record, events));
  }
  transaction.commit();
  applySlotEvents(events);
  return ids;
}

bool Index::setCacheSlot(std::int64_t instanceId, std::optional<std::int64_t> slot) {
  if (slot) {
    validateSlot(*slot);
  }
  std::lock_guard lock(mutex_);
  std::vector<SlotEvent> events;
  Transaction transaction(connection_);
  std::optional<std::int64_t> oldSlot;
  {
    Use find(cached(kSelectSlotById));
    find->bind(1, instanceId);
    if (!find->step()) {
      return false;
    }
    oldSlot = find->columnOptionalInt(0);
  }
  if (oldSlot != slot) {
    Use set(cached(kSetSlot));
    set->bind(1, slot).bind(2, instanceId).run();
  }
  changeSlotLocked(oldSlot, slot, events);
  transaction.commit();
  applySlotEvents(events);
  return true;
}

std::optional<InstanceRecord> Index::findInstance(std::string_view resourceId) {
  std::lock_guard lock(mutex_);
  Use select(cached(kSelectByResource));
  select->bind(1, resourceId);
  if (!select->step()) {
    return std::nullopt;
  }
  return readRecord(*select);
}

std::optional<InstanceRecord> Index::instanceById(std::int64_t id) {
  std::lock_guard lock(mutex_);
  Use select(cached(kSelectById));
  select->bind(1, id);
  if (!select->step()) {
    return std::nullopt;
  }
  return readRecord(*select);
}

std::vector<InstanceRecord> Index::instancesWhere(const std::string& sql, std::string_view value) {
  std::lock_guard lock(mutex_);
  Use select(cached(sql));
  select->bind(1, value);
  std::vector<InstanceRecord> records;
  records.reserve(32);
  while (select->step()) {
    records.push_back(readRecord(*select));
  }
  return records;
}

std::vector<InstanceRecord> Index::instancesOfPatient(std::string_view patientKey) {
  return instancesWhere(kSelectByPatient, patientKey);
}

std::vector<InstanceRecord> Index::instancesOfStudy(std::string_view studyInstanceUid) {
  return instancesWhere(kSelectByStudy, studyInstanceUid);
}

std::vector<InstanceRecord> Index::instancesOfStudyResource(std::string_view studyResourceId) {
  return instancesWhere(kSelectByStudyResource, studyResourceId);
}

std::vector<InstanceRecord> Index::decodedInstances() {
  return instancesWhere(kSelectDecoded, toString(DecodeState::Decoded));
}

void Index::removeRowLocked(std::int64_t id, std::optional<std::int64_t> slot,
                            std::vector<SlotEvent>& events) {
  {
    Use remove(cached("DELETE FROM instances WHERE id = ?"));
    remove->bind(1, id).run();  // quality and predictions go with it (ON DELETE CASCADE)
  }
  changeSlotLocked(slot, std::nullopt, events);
}

bool Index::removeInstance(std::string_view resourceId) {
  std::lock_guard lock(mutex_);
  std::vector<SlotEvent> events;
  Transaction transaction(connection_);
  std::int64_t id = 0;
  std::optional<std::int64_t> slot;
  {
    Use find(cached(kSelectSlotByResource));
    find->bind(1, resourceId);
    if (!find->step()) {
      return false;
    }
    id = find->columnInt(0);
    slot = find->columnOptionalInt(1);
  }
  removeRowLocked(id, slot, events);
  transaction.commit();
  applySlotEvents(events);
  return true;
}

std::vector<std::int64_t> Index::cacheSlotsUnder(ResourceLevel level, std::string_view resourceId) {
  if (resourceId.empty()) {
    throw std::invalid_argument("looking up instances under an empty resource id");
  }
  std::lock_guard lock(mutex_);
  Use select(cached(rowsUnderSql(level)));
  select->bind(1, resourceId);
  std::vector<std::int64_t> slots;
  while (select->step()) {
    if (const auto slot = select->columnOptionalInt(2))
      slots.push_back(*slot);
  }
  return slots;
}

std::vector<std::string> Index::removeInstancesUnder(ResourceLevel level, std::string_view resourceId) {
  if (resourceId.empty()) {
    throw std::invalid_argument("removing instances under an empty resource id");
  }
  const char* const rowsSql = rowsUnderSql(level);
  std::lock_guard lock(mutex_);
  std::vector<SlotEvent> events;
  Transaction transaction(connection_);
  struct Row {
    std::int64_t id;
    std::optional<std::int64_t> slot;
  };
  std::vector<Row> rows;
  std::vector<std::string> removed;
  std::set<std::string> studies;
  {
    Use select(cached(rowsSql));
    select->bind(1, resourceId);
    while (select->step()) {
      rows.push_back({select->columnInt(0), select->columnOptionalInt(2)});
      removed.push_back(select->columnText(1));
      if (std::string study = select->columnText(3); !study.empty()) {
        studies.insert(std::move(study));
      }
    }
  }
  for (const Row& row : rows) {
    removeRowLocked(row.id, row.slot, events);
  }
  if (level == ResourceLevel::Study) {
    studies.emplace(resourceId);
  }
  for (const std::string& study : studies) {
    {
      Use left(cached("SELECT 1 FROM instances WHERE study_resource_id = ? LIMIT 1"));
      left->bind(1, study);
      if (left->step()) {
        continue;  // the study still has instances: it was not removed
      }
    }
    Use remove(cached(kDeleteAnnotation));
    remove->bind(1, study).run();
  }
  transaction.commit();
  applySlotEvents(events);
  return removed;
}

std::int64_t Index::instanceCount() {
  std::lock_guard lock(mutex_);
  Use count(cached("SELECT COUNT(*) FROM instances"));
  count->step();
  return count->columnInt(0);
}

IndexSummary Index::summary() {
  std::lock_guard lock(mutex_);
  IndexSummary summary;
  // One read snapshot, so that the counts agree with each other.
  connection_.execScript("BEGIN");
  struct EndRead {
    Connection& connection;
    ~EndRead() {
      try {
        connection.execScript("COMMIT");
      } catch (...) {
        // a read-only transaction cannot fail to end in a way the caller could act on
      }
    }
  } endRead{connection_};
  {
    Use totals(
        cached("SELECT COUNT(*), COUNT(*) FILTER (WHERE decode_state = 'decoded'),"
               " COUNT(DISTINCT patient_key) FILTER (WHERE decode_state = 'decoded'),"
               " COUNT(DISTINCT NULLIF(study_instance_uid, '')) FILTER (WHERE decode_state = 'decoded'),"
               " COUNT(DISTINCT NULLIF(series_instance_uid, '')) FILTER (WHERE decode_state = 'decoded')"
               " FROM instances"));
    totals->step();
    summary.files = totals->columnInt(0);
    summary.images = totals->columnInt(1);
    summary.patients = totals->columnInt(2);
    summary.studies = totals->columnInt(3);
    summary.series = totals->columnInt(4);
  }
  summary.byState = countsLocked(kCountByState);
  summary.views = countsLocked(
      "SELECT COALESCE(view_position, ''), COUNT(*) FROM instances WHERE decode_state = 'decoded'"
      " GROUP BY 1");
  summary.modalities = countsLocked(
      "SELECT COALESCE(modality, ''), COUNT(*) FROM instances WHERE decode_state = 'decoded'"
      " GROUP BY 1");
  summary.problemReasons = countsLocked(
      "SELECT decode_reason, COUNT(*) FROM instances WHERE decode_state <> 'decoded' GROUP BY 1");
  countListItems(
      countsLocked("SELECT metadata_issues, COUNT(*) FROM instances WHERE metadata_issues <> '' GROUP BY 1"),
      summary.metadataIssues);
  return summary;
}

std::map<std::string, std::int64_t> Index::countsLocked(std::string_view sql) {
  std::map<std::string, std::int64_t> counts;
  Use group(cached(sql));
  while (group->step()) {
    counts[group->columnText(0)] += group->columnInt(1);
  }
  return counts;
}

std::map<std::string, std::int64_t> Index::decodeStateCounts() {
  std::lock_guard lock(mutex_);
  return countsLocked(kCountByState);
}

std::map<std::string, std::int64_t> Index::qualityFlagCounts() {
  std::lock_guard lock(mutex_);
  return countsLocked("SELECT COALESCE(flag, ''), COUNT(*) FROM quality GROUP BY 1");
}

std::map<std::string, std::int64_t> Index::qualityReasonCounts() {
  std::lock_guard lock(mutex_);
  std::map<std::string, std::int64_t> counts;
  countListItems(countsLocked("SELECT reasons, COUNT(*) FROM quality WHERE reasons <> '' GROUP BY 1"),
                 counts);
  return counts;
}

std::int64_t Index::putInstanceWithQuality(const InstanceRecord& record,
                                           const std::optional<QualityRecord>& quality) {
  std::lock_guard lock(mutex_);
  std::vector<SlotEvent> events;
  Transaction transaction(connection_);
  const std::int64_t id = upsertLocked(record, events);
  if (quality) {
    QualityRecord q = *quality;
    q.instanceId = id;
    putQualityLocked(q);
  } else {
    Use remove(cached("DELETE FROM quality WHERE instance_id = ?"));
    remove->bind(1, id).run();
  }
  transaction.commit();
  applySlotEvents(events);
  return id;
}

// --- cache slots

std::int64_t Index::reserveCacheSlot() {
  std::lock_guard lock(mutex_);
  if (!freeSlots_.empty()) {
    const std::int64_t slot = *freeSlots_.begin();
    freeSlots_.erase(freeSlots_.begin());
    reserved_.insert(slot);
    return slot;
  }
  // Re-read the maximum so that slots taken by another connection to the same file are respected.
  Use max(
      cached("SELECT MAX(COALESCE((SELECT MAX(cache_slot) FROM instances), -1),"
             " COALESCE((SELECT MAX(slot) FROM free_cache_slots), -1))"));
  max->step();
  std::int64_t slot = std::max(max->columnInt(0) + 1, nextSlot_);
  if (!reserved_.empty()) {
    slot = std::max(slot, *reserved_.rbegin() + 1);
  }
  nextSlot_ = slot + 1;
  reserved_.insert(slot);
  return slot;
}

void Index::releaseCacheSlot(std::int64_t slot) {
  validateSlot(slot);
  std::lock_guard lock(mutex_);
  {
    Use used(cached("SELECT resource_id FROM instances WHERE cache_slot = ?"));
    used->bind(1, slot);
    if (used->step()) {
      throw std::logic_error("cache slot " + std::to_string(slot) + " is in use by instance " +
                             used->columnText(0) + " and cannot be released");
    }
  }
  Use free(cached(kFreeSlot));
  free->bind(1, slot).run();
  reserved_.erase(slot);
  freeSlots_.insert(slot);
}

// --- quality

void Index::putQuality(const QualityRecord& q) {
  std::lock_guard lock(mutex_);
  putQualityLocked(q);
}

void Index::putQualityLocked(const QualityRecord& q) {
  Use put(cached(
      "INSERT INTO quality (instance_id, sharpness, noise, contrast, clip_low, clip_high, dynamic_range,"
      " mean_intensity, flag, reasons, body_clip_low, body_clip_high, body_mean, updated_at)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, " COMCL_NOW
      ") ON CONFLICT (instance_id) DO UPDATE SET sharpness = ?2, noise = ?3, contrast = ?4, clip_low = ?5,"
      " clip_high = ?6, dynamic_range = ?7, mean_intensity = ?8, flag = ?9, reasons = ?10,"
      " body_clip_low = ?11, body_clip_high = ?12, body_mean = ?13, updated_at = " COMCL_NOW));
  put->bind(1, q.instanceId)
      .bind(2, q.sharpness)
      .bind(3, q.noise)
      .bind(4, q.contrast)
      .bind(5, q.clipLow)
      .bind(6, q.clipHigh)
      .bind(7, q.dynamicRange)
      .bind(8, q.meanIntensity)
      .bind(9, q.flag)
      .bind(10, q.reasons)
      .bind(11, q.bodyClipLow)
      .bind(12, q.bodyClipHigh)
      .bind(13, q.bodyMean)
      .run();
}

std::optional<QualityRecord> Index::quality(std::int64_t instanceId) {
  std::lock_guard lock(mutex_);
  Use get(cached(
      "SELECT instance_id, sharpness, noise, contrast, clip_low, clip_high, dynamic_range, mean_intensity,"
      " flag, reasons, body_clip_low, body_clip_high, body_mean FROM quality WHERE instance_id = ?"));
  get->bind(1, instanceId);
  if (!get->step()) {
    return std::nullopt;
  }
  QualityRecord q;
  q.instanceId = get->columnInt(0);
  q.sharpness = get->columnDouble(1);
  q.noise = get->columnDouble(2);
  q.contrast = get->columnDouble(3);
  q.clipLow = get->columnDouble(4);
  q.clipHigh = get->columnDouble(5);
  q.dynamicRange = get->columnDouble(6);
  q.meanIntensity = get->columnDouble(7);
  q.flag = get->columnOptionalText(8);
  q.reasons = get->columnText(9);
  q.bodyClipLow = get->columnDouble(10);
  q.bodyClipHigh = get->columnDouble(11);
  q.bodyMean = get->columnDouble(12);
  return q;
}

// --- labels

void Index::putLabels(const std::vector<LabelRecord>& labels) {
  std::lock_guard lock(mutex_);
  Transaction transaction(connection_);
  for (const LabelRecord& label : labels) {
    if (label.scope.empty() || label.key.empty() || label.finding.empty()) {
      throw std::invalid_argument("label needs a scope, a key and a finding (key '" + label.key +
                                  "', finding '" + label.finding + "')");
    }
    Use put(
        cached("INSERT INTO labels (scope, key, finding, value, source, updated_at) VALUES (?1, ?2, ?3, ?4, "
               "?5, " COMCL_NOW ") ON CONFLICT (scope, key, finding) DO UPDATE SET value = ?4, source = ?5, "
               "updated_at = " COMCL_NOW));
    put->bind(1, label.scope)
        .bind(2, label.key)
        .bind(3, label.finding)
        .bind(4, label.value)
        .bind(5, label.source);
    put->run();
  }
  transaction.commit();
}

std::vector<LabelRecord> Index::labels(std::string_view scope, std::string_view key) {
  std::lock_guard lock(mutex_);
  Use get(cached(
      "SELECT scope, key, finding, value, source FROM labels WHERE scope = ? AND key = ? ORDER BY finding"));
  get->bind(1, scope).bind(2, key);
  std::vector<LabelRecord> result;
  while (get->step()) {
    result.push_back({get->columnText(0), get->columnText(1), get->columnText(2), get->columnDouble(3),
                      get->columnText(4)});
  }
  return result;
}

std::vector<LabelRecord> Index::allLabels() {
  std::lock_guard lock(mutex_);
  Use get(cached("SELECT scope, key, finding, value, source FROM labels ORDER BY scope, key, finding"));
  std::vector<LabelRecord> result;
  while (get->step()) {
    result.push_back({get->columnText(0), get->columnText(1), get->columnText(2), get->columnDouble(3),
                      get->columnText(4)});
  }
  return result;
}

// --- lesion boxes

void Index::putLesionBoxes(const std::vector<LesionBoxRecord>& boxes) {
  std::lock_guard lock(mutex_);
  Transaction transaction(connection_);
  std::set<std::tuple<std::int64_t, std::string, std::string>> cleared;  // (instance, finding, source)
  for (const LesionBoxRecord& box : boxes) {
    std::int64_t id = 0;
    {
      Use find(cached("SELECT id, image_cols, image_rows FROM instances WHERE resource_id = ?"));
      find->bind(1, box.resourceId);
      if (!find->step())
        throw std::invalid_argument(describeBox(box) + ": no such instance in the index");
      id = find->columnInt(0);
      validateBox(box, find->columnInt(1), find->columnInt(2));
    }
    if (cleared.emplace(id, box.finding, box.source).second) {
      Use clear(cached("DELETE FROM lesion_boxes WHERE instance_id = ? AND finding = ? AND source = ?"));
      clear->bind(1, id).bind(2, box.finding).bind(3, box.source).run();
    }
    Use put(cached(
        "INSERT INTO lesion_boxes (instance_id, finding, x0, y0, x1, y1, confidence, source, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, " COMCL_NOW ")"));
    put->bind(1, id)
        .bind(2, box.finding)
        .bind(3, box.x0)
        .bind(4, box.y0)
        .bind(5, box.x1)
        .bind(6, box.y1)
        .bind(7, box.confidence)
        .bind(8, box.source)
        .run();
  }
  transaction.commit();
}

std::vector<LesionBoxRecord> Index::lesionBoxes(std::string_view finding) {
  std::lock_guard lock(mutex_);
  Use get(cached(kSelectBoxesOfFinding));
  get->bind(1, finding);
  std::vector<LesionBoxRecord> result;
  while (get->step())
    result.push_back(readBox(*get));
  return result;
}

std::vector<LesionBoxRecord> Index::allLesionBoxes() {
  std::lock_guard lock(mutex_);
  Use get(cached(kSelectAllBoxes));
  std::vector<LesionBoxRecord> result;
  while (get->step())
    result.push_back(readBox(*get));
  return result;
}

std::int64_t Index::removeLesionBoxes(std::string_view finding, std::string_view source) {
  std::lock_guard lock(mutex_);
  Use remove(cached("DELETE FROM lesion_boxes WHERE finding = ? AND source = ?"));
  remove->bind(1, finding).bind(2, source).run();
  return connection_.changes();
}

// --- predictions

void Index::putPredictions(const std::vector<PredictionRecord>& predictions) {
  std::lock_guard lock(mutex_);
  Transaction transaction(connection_);
  for (const PredictionRecord& p : predictions) {
    Use put(
        cached("INSERT INTO predictions (instance_id, model_version, finding, score, created_at)"
               " VALUES (?1, ?2, ?3, ?4, " COMCL_NOW ") ON CONFLICT (instance_id, model_version, finding)"
               " DO UPDATE SET score = ?4, created_at = " COMCL_NOW));
    put->bind(1, p.instanceId).bind(2, p.modelVersion).bind(3, p.finding).bind(4, p.score).run();
  }
  transaction.commit();
}

std::vector<PredictionRecord> Index::predictions(std::int64_t instanceId) {
  std::lock_guard lock(mutex_);
  Use get(
      cached("SELECT instance_id, model_version, finding, score FROM predictions WHERE instance_id = ?"
             " ORDER BY model_version, finding"));
  get->bind(1, instanceId);
  std::vector<PredictionRecord> result;
  while (get->step()) {
    result.push_back(
        {get->columnInt(0), static_cast<int>(get->columnInt(1)), get->columnText(2), get->columnDouble(3)});
  }
  return result;
}

std::vector<PredictionRecord> Index::predictionsOfModel(std::int64_t instanceId, int modelVersion) {
  std::lock_guard lock(mutex_);
  Use get(cached(kSelectPredictionsOfModel));
  get->bind(1, instanceId).bind(2, modelVersion);
  std::vector<PredictionRecord> result;
  while (get->step()) {
    result.push_back(
        {get->columnInt(0), static_cast<int>(get->columnInt(1)), get->columnText(2), get->columnDouble(3)});
  }
  return result;
}

// --- study annotations

void Index::putStudyAnnotation(const StudyAnnotationRecord& a) {
  if (a.studyResourceId.empty()) {
    throw std::invalid_argument("study annotation without a study resource id");
  }
  std::lock_guard lock(mutex_);
  Use put(cached(
      "INSERT INTO study_annotations (study_resource_id, study_instance_uid, fingerprint, model_version,"
      " quality_flag, report_json, sr_instance_id, annotated_at)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, COALESCE(NULLIF(?8, ''), " COMCL_NOW
      "))"
      " ON CONFLICT (study_resource_id) DO UPDATE SET study_instance_uid = ?2, fingerprint = ?3,"
      " model_version = ?4, quality_flag = ?5, report_json = ?6, sr_instance_id = ?7,"
      " annotated_at = COALESCE(NULLIF(?8, ''), " COMCL_NOW ")"));
  put->bind(1, a.studyResourceId)
      .bind(2, a.studyInstanceUid)
      .bind(3, a.fingerprint)
      .bind(4, a.modelVersion)
      .bind(5, a.qualityFlag)
      .bind(6, a.reportJson)
      .bind(7, a.srInstanceId)
      .bind(8, a.annotatedAt)
      .run();
}

std::optional<StudyAnnotationRecord> Index::studyAnnotation(std::string_view studyResourceId) {
  std::lock_guard lock(mutex_);
  Use get(cached(
      "SELECT study_resource_id, study_instance_uid, fingerprint, model_version, quality_flag,"
      " report_json, sr_instance_id, annotated_at FROM study_annotations WHERE study_resource_id = ?"));
  get->bind(1, studyResourceId);
  if (!get->step()) {
    return std::nullopt;
  }
  return readAnnotation(*get);
}

bool Index::removeStudyAnnotation(std::string_view studyResourceId) {
  std::lock_guard lock(mutex_);
  Use remove(cached(kDeleteAnnotation));
  remove->bind(1, studyResourceId).run();
  return connection_.changes() > 0;
}

std::vector<std::string> Index::textColumn(std::string_view sql) {
  std::lock_guard lock(mutex_);
  Use get(cached(sql));
  std::vector<std::string> result;
  while (get->step()) {
    result.push_back(get->columnText(0));
  }
  return result;
}

std::vector<std::string> Index::reportInstanceIds() {
  return textColumn(
      "SELECT sr_instance_id FROM study_annotations WHERE sr_instance_id <> '' ORDER BY sr_instance_id");
}

std::vector<std::string> Index::studyResourceIds() {
  return textColumn(
      "SELECT study_resource_id FROM instances WHERE study_resource_id <> ''"
      " UNION SELECT study_resource_id FROM study_annotations ORDER BY 1");
}

std::vector<std::string> Index::studyInstanceUidsWithAccession(std::string_view accessionNumber) {
  std::lock_guard lock(mutex_);
  Use get(cached(
      "SELECT DISTINCT study_instance_uid FROM instances"
      " WHERE accession_number = ? AND accession_number <> '' AND study_instance_uid <> '' ORDER BY 1"));
  get->bind(1, accessionNumber);
  std::vector<std::string> result;
  while (get->step())
    result.push_back(get->columnText(0));
  return result;
}

std::int64_t Index::studyAnnotationCount() {
  std::lock_guard lock(mutex_);
  Use count(cached("SELECT COUNT(*) FROM study_annotations"));
  count->step();
  return count->columnInt(0);
}

// --- splits

void Index::assignSplitLocked(std::string_view patientKey, std::string_view split, std::int64_t seed) {
  if (patientKey.empty()) {
    throw std::invalid_argument("split assignment without a patient key");
  }
  if (!isSplitName(split)) {
    throw std::invalid_argument("unknown split '" + std::string(split) + "' (train, val or test)");
  }
  {
    Use get(cached("SELECT split FROM splits WHERE patient_key = ?"));
    get->bind(1, patientKey);
    if (get->step()) {
      const std::string current = get->columnText(0);
      if (current == split) {
        return;
      }
      throw std::logic_error("patient " + std::string(patientKey) + " is already in split '" + current +
                             "'; splits are fixed once assigned");
    }
  }
  Use put(
      cached("INSERT INTO splits (patient_key, split, seed, assigned_at) VALUES (?, ?, ?, " COMCL_NOW ")"));
  put->bind(1, patientKey).bind(2, split).bind(3, seed).run();
}

void Index::assignSplit(std::string_view patientKey, std::string_view split, std::int64_t seed) {
  std::lock_guard lock(mutex_);
  Transaction transaction(connection_);
  assignSplitLocked(patientKey, split, seed);
  transaction.commit();
}

void Index::assignSplits(const std::vector<std::pair<std::string, std::string>>& patientSplits,
                         std::int64_t seed) {
  std::lock_guard lock(mutex_);
  Transaction transaction(connection_);
  for (const auto& [patientKey, split] : patientSplits) {
    assignSplitLocked(patientKey, split, seed);
  }
  transaction.commit();
}

std::optional<std::string> Index::splitOf(std::string_view patientKey) {
  std::lock_guard lock(mutex_);
  Use get(cached("SELECT split FROM splits WHERE patient_key = ?"));
  get->bind(1, patientKey);
  if (!get->step()) {
    return std::nullopt;
  }
  return get->columnText(0);
}

std::map<std::string, std::string> Index::splits() {
  std::lock_guard lock(mutex_);
  Use get(cached("SELECT patient_key, split FROM splits"));
  std::map<std::string, std::string> result;
  while (get->step()) {
    result.emplace(get->columnText(0), get->columnText(1));
  }
  return result;
}

// --- model versions

void Index::putModelVersion(const ModelVersionRecord& m) {
  std::lock_guard lock(mutex_);
  Use put(
      cached("INSERT INTO model_versions (version, run_id, method, path, status, metrics_json, created_at)"
             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(NULLIF(?7, ''), " COMCL_NOW "))"
             " ON CONFLICT (version) DO UPDATE SET run_id = ?2, method = ?3, path = ?4, status = ?5,"
             " metrics_json = ?6, created_at = COALESCE(NULLIF(?7, ''), created_at)"));
  put->bind(1, m.version)
      .bind(2, m.runId)
      .bind(3, m.method)
      .bind(4, m.path)
      .bind(5, m.status)
      .bind(6, m.metricsJson)
      .bind(7, m.createdAt)
      .run();
}

std::optional<ModelVersionRecord> Index::modelVersion(int version) {
  std::lock_guard lock(mutex_);
  Use get(
      cached("SELECT version, run_id, method, path, status, metrics_json, created_at FROM model_versions"
             " WHERE version = ?"));
  get->bind(1, version);
  if (!get->step()) {
    return std::nullopt;
  }
  return readModel(*get);
}

std::vector<ModelVersionRecord> Index::modelVersions() {
  std::lock_guard lock(mutex_);
  Use get(
      cached("SELECT version, run_id, method, path, status, metrics_json, created_at FROM model_versions"
             " ORDER BY version"));
  std::vector<ModelVersionRecord> result;
  while (get->step()) {
    result.push_back(readModel(*get));
  }
  return result;
}

std::optional<int> Index::activateModelVersion(int version) {
  std::lock_guard lock(mutex_);
  Transaction transaction(connection_);
  {
    Use exists(cached("SELECT 1 FROM model_versions WHERE version = ?"));
    exists->bind(1, version);
    if (!exists->step())
      throw DatabaseError("model version " + std::to_string(version) + " is not in the registry");
  }
  std::optional<int> previous;
  {
    Use active(cached("SELECT value FROM kv_values WHERE name = ?"));
    active->bind(1, std::string_view(kActiveModelVersionKey));
    if (active->step()) {
      try {
        previous = std::stoi(active->columnText(0));
      } catch (const std::exception&) {  // an unreadable value names no version; it is replaced below
      }
    }
  }
  Use retire(cached("UPDATE model_versions SET status = 'retired' WHERE status = 'active' AND version <> ?"));
  retire->bind(1, version).run();
  Use promote(cached("UPDATE model_versions SET status = 'active' WHERE version = ?"));
  promote->bind(1, version).run();
  Use name(cached("INSERT INTO kv_values (name, value, updated_at) VALUES (?1, ?2, " COMCL_NOW
                  ") ON CONFLICT (name) DO UPDATE SET value = ?2, updated_at = " COMCL_NOW));
  name->bind(1, std::string_view(kActiveModelVersionKey)).bind(2, std::to_string(version)).run();
  transaction.commit();
  return previous;
}

// --- training runs

std::int64_t Index::insertTrainingRun(const TrainingRunRecord& r) {
  std::lock_guard lock(mutex_);
  Use put(cached(
      "INSERT INTO training_runs (job_id, state, request_json, started_at, finished_at, error, model_version,"
      " details_json) VALUES (?1, ?2, ?3, COALESCE(NULLIF(?4, ''), " COMCL_NOW "), ?5, ?6, ?7, ?8)"));
  put->bind(1, r.jobId)
      .bind(2, r.state)
      .bind(3, r.requestJson)
      .bind(4, r.startedAt)
      .bind(5, r.finishedAt)
      .bind(6, r.error)
      .bind(7, r.modelVersion)
      .bind(8, r.detailsJson)
      .run();
  return connection_.lastInsertRowId();
}

void Index::updateTrainingRun(const TrainingRunRecord& r) {
  std::lock_guard lock(mutex_);
  Use put(cached(
      "UPDATE training_runs SET job_id = ?2, state = ?3, request_json = ?4,"
      " started_at = COALESCE(NULLIF(?5, ''), started_at), finished_at = ?6, error = ?7, model_version = ?8,"
      " details_json = ?9 WHERE id = ?1"));
  put->bind(1, r.id)
      .bind(2, r.jobId)
      .bind(3, r.state)
      .bind(4, r.requestJson)
      .bind(5, r.startedAt)
      .bind(6, r.finishedAt)
      .bind(7, r.error)
      .bind(8, r.modelVersion)
      .bind(9, r.detailsJson)
      .run();
  if (connection_.changes() == 0) {
    throw DatabaseError("no training run with id " + std::to_string(r.id));
  }
}

std::optional<TrainingRunRecord> Index::trainingRun(std::int64_t id) {
  std::lock_guard lock(mutex_);
  Use get(
      cached("SELECT id, job_id, state, request_json, started_at, finished_at, error, model_version,"
             " details_json FROM training_runs WHERE id = ?"));
  get->bind(1, id);
  if (!get->step()) {
    return std::nullopt;
  }
  return readRun(*get);
}

std::vector<TrainingRunRecord> Index::trainingRuns() {
  std::lock_guard lock(mutex_);
  Use get(
      cached("SELECT id, job_id, state, request_json, started_at, finished_at, error, model_version,"
             " details_json FROM training_runs ORDER BY id"));
  std::vector<TrainingRunRecord> result;
  while (get->step()) {
    result.push_back(readRun(*get));
  }
  return result;
}

// --- cursor and values

std::optional<std::int64_t> Index::cursor(std::string_view name) {
  std::lock_guard lock(mutex_);
  Use get(cached("SELECT seq FROM change_cursor WHERE name = ?"));
  get->bind(1, name);
  if (!get->step()) {
    return std::nullopt;
  }
  return get->columnInt(0);
}

void Index::setCursor(std::string_view name, std::int64_t seq) {
  std::lock_guard lock(mutex_);
  Use put(cached("INSERT INTO change_cursor (name, seq, updated_at) VALUES (?1, ?2, " COMCL_NOW
                 ") ON CONFLICT (name) DO UPDATE SET seq = ?2, updated_at = " COMCL_NOW));
  put->bind(1, name).bind(2, seq).run();
}

std::optional<std::string> Index::value(std::string_view name) {
  std::lock_guard lock(mutex_);
  Use get(cached("SELECT value FROM kv_values WHERE name = ?"));
  get->bind(1, name);
  if (!get->step()) {
    return std::nullopt;
  }
  return get->columnText(0);
}

void Index::setValue(std::string_view name, std::string_view value) {
  std::lock_guard lock(mutex_);
  Use put(cached("INSERT INTO kv_values (name, value, updated_at) VALUES (?1, ?2, " COMCL_NOW
                 ") ON CONFLICT (name) DO UPDATE SET value = ?2, updated_at = " COMCL_NOW));
  put->bind(1, name).bind(2, value).run();
}

}  // namespace comcl::storage
