#include "engine.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <future>

#include "comcl/imaging/quality_flags.h"
#include "comcl/imaging/structured_report.h"
#include "comcl/storage/cache_key.h"
#include "comcl/storage/schema.h"
#include "orthanc_api.h"
#include "orthanc_job.h"
#include "study_report.h"

namespace comcl::plugin {

namespace {

constexpr const char* kCursorName = "orthanc-changes";
constexpr std::size_t kLatencyWindow = 1000;
constexpr int kChangesPerPage = 100;

using Clock = std::chrono::steady_clock;

double millisecondsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double percentile(std::vector<double> values, double q) {
  if (values.empty())
    return 0;
  std::sort(values.begin(), values.end());
  const auto index = static_cast<std::size_t>(q * static_cast<double>(values.size() - 1) + 0.5);
  return values[std::min(index, values.size() - 1)];
}

std::optional<storage::ResourceLevel> levelOf(OrthancPluginResourceType type) {
  switch (type) {
    case OrthancPluginResourceType_Patient:
      return storage::ResourceLevel::Patient;
    case OrthancPluginResourceType_Study:
      return storage::ResourceLevel::Study;
    case OrthancPluginResourceType_Series:
      return storage::ResourceLevel::Series;
    case OrthancPluginResourceType_Instance:
      return storage::ResourceLevel::Instance;
    default:
      return std::nullopt;
  }
}

// Our own reports carry Manufacturer "comcl" near the start of the file: a cheap test before a full parse.
bool mayBeOwnReport(const std::string& dicom) {
  const std::size_t head = std::min<std::size_t>(dicom.size(), 64 * 1024);
  return std::string_view(dicom.data(), head).find("comcl") != std::string_view::npos &&
         imaging::isComclReport(dicom.data(), dicom.size());
}

std::vector<std::pair<std::string, std::string>> studyTagsOf(const nlohmann::json& study) {
  std::vector<std::pair<std::string, std::string>> tags;
  for (const char* group : {"PatientMainDicomTags", "MainDicomTags"}) {
    if (!study.contains(group) || !study.at(group).is_object())
      continue;
    for (const auto& item : study.at(group).items()) {
      if (item.value().is_string())
        tags.emplace_back(item.key(), item.value().get<std::string>());
    }
  }
  return tags;
}

// GET /comcl/instances/{id}: the flag, the "; "-separated reasons and every metric, flat.
nlohmann::json qualityJson(const storage::QualityRecord& q) {
  nlohmann::json json = qualityMetricsJson(q);
  json["Flag"] = optionalText(q.flag);
  json["Reasons"] = q.reasons;
  return json;
}

imaging::IngestOptions ingestOptions(const PluginConfig& config) {
  imaging::IngestOptions options;
  options.quality = config.quality;
  options.fallback = [](const void* data, std::size_t size, const imaging::DicomMetadata&) {
    return decodeWithOrthanc(data, size);
  };
  return options;
}

}  // namespace

const char* toString(AnnotationOutcome outcome) {
  switch (outcome) {
    case AnnotationOutcome::Annotated:
      return "annotated";
    case AnnotationOutcome::Unchanged:
      return "unchanged";
    case AnnotationOutcome::NotFound:
      return "not-found";
    case AnnotationOutcome::Failed:
      return "failed";
  }
  return "failed";
}

Engine::Engine(PluginConfig config, std::string deviceText, torch::Device device)
    : config_(std::move(config)),
      deviceText_(std::move(deviceText)),
      index_(config_.databasePath),
      cache_(config_.cachePath, storage::CacheFormat{config_.imageSize, 8, config_.imageChannels}),
      ingestor_(index_, cache_, ingestOptions(config_)),
      scoring_(index_, cache_, config_.modelDirectory, device, config_.scoreBatchSize,
               [](const std::string& message) { logWarning(message); }),
      models_(index_, config_.modelDirectory),
      labels_(index_, config_.labels),
      ingestQueue_(config_.workers, static_cast<std::size_t>(config_.queueCapacity)),
      training_(
          index_, cache_, TrainingSettings{config_.modelDirectory, config_.runDirectory, config_.promotion},
          [this](int version) {
            std::optional<nlohmann::json> result = activateModel(version);
            if (!result)
              throw std::runtime_error("version " + std::to_string(version) + " is not in the registry");
            return *result;
          }) {
  for (const std::int64_t run : training_.interruptedAtStart())
    logWarning("training run " + std::to_string(run) +
               " was going when Orthanc stopped: marked interrupted, the registry is unchanged");
  for (const std::string& id : index_.reportInstanceIds())
    ownReports_.insert(id);
  catchUpCursor_ = index_.cursor(kCursorName).value_or(0);
  scoring_.refresh();
}

Engine::~Engine() {
  stop();
}

void Engine::start() {
  if (started_.exchange(true))
    return;
  catchUpThread_ = std::thread([this] { catchUpLoop(); });
}

void Engine::stop() {
  if (stopping_.exchange(true))
    return;
  training_.stop();  // the run is recorded as interrupted; nothing half-written is registered
  rescoring_.stop();
  catchUpWake_.notify_all();
  ingestQueue_.stop();
  annotator_.stop();
  annotator_.join();
  if (catchUpThread_.joinable())
    catchUpThread_.join();
  scoring_.stop();
}

void Engine::warnOnce(const std::string& key, const std::string& message) {
  {
    std::lock_guard lock(stateMutex_);
    if (!warned_.insert(key).second)
      return;
  }
  logWarning(message);
}

// --- callbacks

void Engine::onChange(OrthancPluginChangeType change, OrthancPluginResourceType level,
                      const std::string& id) {
  if (stopping_)
    return;
  switch (change) {
    case OrthancPluginChangeType_NewInstance:
      if (!ingestQueue_.tryPost([this, id] { ingestInstance(id); })) {
        ++counters_.dropped;
        catchUpWake_.notify_all();  // the change log has it; let the catch-up run soon
      }
      break;
    case OrthancPluginChangeType_StableStudy:
      queueAnnotation(id);
      break;
    case OrthancPluginChangeType_Deleted:
      if (const auto resourceLevel = levelOf(level)) {
        boost::asio::post(annotator_, [this, l = *resourceLevel, id] { removeResource(l, id); });
      }
      break;
    default:
      break;
  }
}

bool Engine::isOwnReport(const std::string& instanceId) {
  std::lock_guard lock(stateMutex_);
  return ownReports_.count(instanceId) > 0;
}

void Engine::rememberOwnReport(const std::string& instanceId) {
  std::lock_guard lock(stateMutex_);
  ownReports_.insert(instanceId);
}

void Engine::recordLatency(std::vector<double>& window, double milliseconds) {
  std::lock_guard lock(stateMutex_);
  if (window.size() >= kLatencyWindow)
    window.erase(window.begin());
  window.push_back(milliseconds);
}

// --- ingest (worker threads, and the annotator for instances it finds missing)

void Engine::ingestInstance(const std::string& instanceId, bool retryUnsupported) {
  if (stopping_ || isOwnReport(instanceId))
    return;
  if (const auto row = index_.findInstance(instanceId)) {
    // Already indexed (the change log replays what the live path handled). An image no decoder could read
    // is tried again on request: a codec may have been installed since (e.g. orthanc-gdcm).
    if (!retryUnsupported || row->decodeState != storage::DecodeState::Unsupported)
      return;
  }
  const auto start = Clock::now();
  try {
    const std::optional<std::string> dicom = dicomOfInstance(instanceId);
    if (!dicom)
      return;  // deleted meanwhile
    if (mayBeOwnReport(*dicom)) {
      rememberOwnReport(instanceId);
      return;
    }
    const imaging::IngestOutcome outcome =
        ingestor_.ingest(dicom->data(), dicom->size(), "orthanc", instanceId);
    ++counters_.processed;
    if (outcome.state == storage::DecodeState::Failed || outcome.state == storage::DecodeState::Unsupported) {
      ++counters_.failed;
      logWarning("instance " + instanceId + " indexed as " + std::string(storage::toString(outcome.state)) +
                 ": " + outcome.reason);
    }
    if (outcome.state == storage::DecodeState::Decoded && !outcome.alreadyIndexed) {
      if (const auto row = index_.instanceById(outcome.instanceId))
        scoring_.enqueue(*row);
    }
  } catch (const std::exception& e) {
    ++counters_.processed;
    ++counters_.failed;
    logError("cannot index instance " + instanceId + ": " + e.what());
  }
  recordLatency(ingestLatencies_, millisecondsSince(start));
}

// --- annotation (the annotator thread)

void Engine::queueAnnotation(const std::string& studyId) {
  {
    std::lock_guard lock(stateMutex_);
    if (!queuedStudies_.insert(studyId).second)
      return;  // already waiting
  }
  boost::asio::post(annotator_, [this, studyId] {
    {
      std::lock_guard lock(stateMutex_);
      queuedStudies_.erase(studyId);
    }
    if (!stopping_)
      annotate(studyId, false);
  });
}

std::optional<std::string> Engine::studyInstanceUidOf(const std::string& studyId) {
  for (const storage::InstanceRecord& row : index_.instancesOfStudyResource(studyId)) {
    if (!row.studyInstanceUid.empty())
      return row.studyInstanceUid;
  }
  return std::nullopt;
}

std::optional<nlohmann::json> Engine::activateModel(int version) {
  std::optional<nlohmann::json> result = models_.activate(version);
  if (result) {
    logInfo("model version " + std::to_string(version) + " activated");
    scoring_.refresh();
    if (config_.rescoreOnActivation) {
      try {
        (*result)["RescoreJob"] = startRescoring().at("ID");
      } catch (const std::exception& e) {
        logWarning("cannot start re-scoring after activating version " + std::to_string(version) + ": " +
                   e.what());
        (*result)["RescoreJob"] = nullptr;
      }
    }
  }
  return result;
}

nlohmann::json Engine::startTraining(TrainRequest request) {
  const TrainingService::Started started = training_.start(std::move(request));
  std::string jobId;
  try {
    jobId = submitWatchingJob(started.task);
  } catch (...) {
    started.task->requestStop(BackgroundTask::StopReason::Canceled);  // nobody could follow or cancel it
    throw;
  }
  training_.attachJob(started.runId, jobId);
  logInfo("training run " + std::to_string(started.runId) + " started (job " + jobId + ")");
  return {{"ID", jobId},
          {"Path", "/jobs/" + jobId},
          {"RunId", started.runId},
          {"Run", "/comcl/runs/" + std::to_string(started.runId)}};
}

nlohmann::json Engine::startRescoring() {
  std::shared_ptr<BackgroundTask> running;
  auto work = [this](BackgroundTask& task) { rescoreArchive(task); };
  std::shared_ptr<BackgroundTask> task = rescoring_.start("ComclRescore", work, &running);
  if (!task) {
    // A newer model supersedes the pass going: stop it (it ends after the study in hand) and start again.
    running->requestStop(BackgroundTask::StopReason::Canceled);
    running->waitFinished(std::chrono::seconds(60));
    task = rescoring_.start("ComclRescore", work, &running);
    if (!task)
      throw std::runtime_error("the re-scoring job in progress did not stop");
  }
  const std::string jobId = submitWatchingJob(task);
  return {{"ID", jobId}, {"Path", "/jobs/" + jobId}};
}

// Every study the index knows, annotated again on the annotator thread (one at a time, so that new studies
// are not held up behind the whole archive): a study whose report depends on the model gets the active
// version's scores; the previous report stays until its replacement is written.
void Engine::rescoreArchive(BackgroundTask& task) {
  const std::optional<ActiveModel> model = scoring_.refresh();
  const std::vector<std::string> studies = index_.studyResourceIds();
  std::int64_t annotated = 0, unchanged = 0, failed = 0, gone = 0;
  for (std::size_t i = 0; i < studies.size(); ++i) {
    if (*task.stopFlag() || stopping_)
      throw std::runtime_error("re-scoring stopped after " + std::to_string(i) + " of " +
                               std::to_string(studies.size()) + " studies");
    switch (annotateNow(studies[i], false).outcome) {
      case AnnotationOutcome::Annotated:
        ++annotated;
        break;
      case AnnotationOutcome::Unchanged:
        ++unchanged;
        break;
      case AnnotationOutcome::NotFound:
        ++gone;
        break;
      case AnnotationOutcome::Failed:
        ++failed;
        break;
    }
    task.update(static_cast<double>(i + 1) / static_cast<double>(studies.size()),
                {{"ModelVersion", model ? nlohmann::json(model->version) : nlohmann::json()},
                 {"Studies", studies.size()},
                 {"Done", i + 1},
                 {"Annotated", annotated},
                 {"Unchanged", unchanged},
                 {"NotFound", gone},
                 {"Failed", failed}});
  }
  if (studies.empty())
    task.update(1, {{"Studies", 0}});
}

AnnotationResult Engine::annotateNow(const std::string& studyId, bool force) {
  auto task = std::make_shared<std::packaged_task<AnnotationResult()>>(
      [this, studyId, force] { return annotate(studyId, force); });
  std::future<AnnotationResult> result = task->get_future();
  boost::asio::post(annotator_, [task] { (*task)(); });
  // The annotator is stopped only at shutdown; a dropped task breaks the promise.
  while (result.wait_for(std::chrono::milliseconds(200)) != std::future_status::ready) {
    if (stopping_)
      return {AnnotationOutcome::Failed, "Orthanc is stopping", nullptr};
  }
  try {
    return result.get();
  } catch (const std::future_error&) {
    return {AnnotationOutcome::Failed, "Orthanc is stopping", nullptr};
  }
}

AnnotationResult Engine::annotate(const std::string& studyId, bool force) {
  const auto start = Clock::now();
  AnnotationResult result;
  try {
    const std::optional<nlohmann::json> study = restGetJsonIfExists("/studies/" + studyId);
    if (!study) {
      result = {AnnotationOutcome::NotFound, "no study " + studyId + " in Orthanc", nullptr};
      return result;
    }
    const std::optional<nlohmann::json> instances = restGetJsonIfExists("/studies/" + studyId + "/instances");
    if (!instances) {
      result = {AnnotationOutcome::NotFound, "no study " + studyId + " in Orthanc", nullptr};
      return result;
    }
    StudyInput input;
    input.studyResourceId = studyId;
    input.studyTags = studyTagsOf(*study);
    input.structuredReport = config_.structuredReport;
    input.model = scoring_.refresh();

    std::vector<storage::InstanceRecord> rows;
    for (const nlohmann::json& instance : *instances) {
      const std::string id = instance.at("ID").get<std::string>();
      if (isOwnReport(id))
        continue;
      std::optional<storage::InstanceRecord> row = index_.findInstance(id);
      if (!row || (force && row->decodeState == storage::DecodeState::Unsupported)) {
        ingestInstance(id, force);  // not seen yet (queue full, plugin was stopped): index it now
        row = index_.findInstance(id);
      }
      if (row)
        rows.push_back(std::move(*row));
    }
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    scoring_.scoreMissing(rows);
    for (storage::InstanceRecord& row : rows) {
      ImageResults image;
      image.quality = index_.quality(row.id);
      if (input.model)
        image.predictions = index_.predictionsOfModel(row.id, input.model->version);
      image.row = std::move(row);
      input.images.push_back(std::move(image));
    }

    const StudyResults results = summariseStudy(input, COMCL_VERSION);
    const std::optional<storage::StudyAnnotationRecord> previous = index_.studyAnnotation(studyId);
    if (!force && previous && previous->fingerprint == results.fingerprint) {
      ++counters_.unchanged;
      result = {AnnotationOutcome::Unchanged, "nothing changed since the last annotation",
                nlohmann::json::parse(previous->reportJson)};
      return result;
    }

    nlohmann::json report = results.report;
    const std::string attachment = config_.attachmentDeclared ? ResultNames::kReportAttachment : "4242";
    if (!config_.attachmentDeclared) {
      warnOnce("attachment",
               std::string("Orthanc's \"UserContentType\" does not declare \"") +
                   ResultNames::kReportAttachment +
                   "\": the study report is stored as attachment 4242 (see docs/annotation.md)");
    }
    restPut("/studies/" + studyId + "/attachments/" + attachment, report.dump(2));

    for (const auto& [name, value] : headlineMetadata(results, input.model)) {
      if (config_.declaredMetadata.count(name) == 0) {
        warnOnce("metadata", std::string("Orthanc's \"UserMetadata\" does not declare ") +
                                 ResultNames::kQualityFlag + ", " + ResultNames::kQualityReasons + ", " +
                                 ResultNames::kModelVersion + ", " + ResultNames::kScores +
                                 ": study metadata are not written, the report attachment is (see "
                                 "docs/annotation.md)");
        continue;
      }
      restPut("/studies/" + studyId + "/metadata/" + name, value);
    }

    std::string srInstanceId = previous ? previous->srInstanceId : "";
    if (config_.structuredReport) {
      const std::vector<std::uint8_t> sr =
          imaging::writeStructuredReport(structuredReportOf(input, results, COMCL_VERSION));
      const nlohmann::json stored = nlohmann::json::parse(restPost("/instances", sr.data(), sr.size()));
      const std::string newId = stored.at("ID").get<std::string>();
      rememberOwnReport(newId);
      if (!srInstanceId.empty() && srInstanceId != newId) {
        try {
          restDelete("/instances/" + srInstanceId);  // the superseded report
        } catch (const OrthancCallError& e) {
          if (!e.notFound())
            logWarning("cannot delete the superseded report " + srInstanceId + ": " + e.what());
        }
      }
      srInstanceId = newId;
      report["StructuredReport"] = newId;
    }

    storage::StudyAnnotationRecord record;
    record.studyResourceId = studyId;
    for (const auto& [key, value] : input.studyTags) {
      if (key == "StudyInstanceUID")
        record.studyInstanceUid = value;
    }
    record.fingerprint = results.fingerprint;
    if (input.model)
      record.modelVersion = input.model->version;
    record.qualityFlag = results.qualityFlag;
    record.reportJson = report.dump();
    record.srInstanceId = srInstanceId;
    index_.putStudyAnnotation(record);
    ++counters_.annotated;
    result = {AnnotationOutcome::Annotated, "annotated", report};
  } catch (const std::exception& e) {
    ++counters_.annotationFailures;
    logError("cannot annotate study " + studyId + ": " + e.what());
    result = {AnnotationOutcome::Failed, e.what(), nullptr};
  }
  recordLatency(annotationLatencies_, millisecondsSince(start));
  return result;
}

void Engine::removeResource(storage::ResourceLevel level, const std::string& id) {
  try {
    // Erase the pixels while the rows still hold their slots, so no new image can have taken one.
    const std::vector<std::uint8_t> blank(cache_.imageBytes(), 0);
    for (const std::int64_t slot : index_.cacheSlotsUnder(level, id))
      cache_.write(slot, 0, blank.data());
    const std::vector<std::string> removed = index_.removeInstancesUnder(level, id);
    if (!removed.empty())
      logInfo("removed " + std::to_string(removed.size()) + " deleted instance(s) from the index");
  } catch (const std::exception& e) {
    logError("cannot remove deleted resource " + id + " from the index: " + e.what());
  }
}

// --- catch-up (its own thread)

std::size_t Engine::reconcileDeletions() {
  std::size_t removed = 0;
  for (const std::string& study : index_.studyResourceIds()) {
    if (stopping_)
      break;
    const std::optional<nlohmann::json> instances = restGetJsonIfExists("/studies/" + study + "/instances");
    const std::vector<storage::InstanceRecord> rows = index_.instancesOfStudyResource(study);
    if (!instances) {
      removeResource(storage::ResourceLevel::Study, study);
      removed += rows.size();
      continue;
    }
    std::set<std::string> present;
    for (const nlohmann::json& instance : *instances)
      present.insert(instance.at("ID").get<std::string>());
    bool changed = false;
    for (const storage::InstanceRecord& row : rows) {
      if (present.count(row.resourceId) == 0) {
        removeResource(storage::ResourceLevel::Instance, row.resourceId);
        ++removed;
        changed = true;
      }
    }
    if (changed)
      queueAnnotation(study);  // its results no longer match what Orthanc holds
  }
  return removed;
}

void Engine::catchUpLoop() {
  try {
    if (const std::size_t removed = reconcileDeletions(); removed > 0)
      logWarning("removed " + std::to_string(removed) +
                 " instance(s) deleted from Orthanc while comcl was not running");
  } catch (const std::exception& e) {
    logError(std::string("cannot reconcile the index with Orthanc's studies: ") + e.what());
  }
  while (!stopping_) {
    bool more = false;
    try {
      more = catchUpPage();
      std::lock_guard lock(catchUpMutex_);
      catchUpError_.clear();
    } catch (const std::exception& e) {
      std::lock_guard lock(catchUpMutex_);
      if (catchUpError_ != e.what())
        logError(std::string("catch-up from the change log failed: ") + e.what());
      catchUpError_ = e.what();
    }
    if (more)
      continue;
    std::unique_lock lock(catchUpMutex_);
    catchUpWake_.wait_for(lock, std::chrono::seconds(config_.catchUpIntervalSeconds),
                          [&] { return stopping_.load(); });
  }
}

// One page of the change log. The cursor never passes a study that is not stable yet: if Orthanc stops
// before its StableStudy, the next start finds the study again here and annotates it.
bool Engine::catchUpPage() {
  const std::int64_t since = catchUpCursor_.load();
  const nlohmann::json page =
      restGetJson("/changes?since=" + std::to_string(since) + "&limit=" + std::to_string(kChangesPerPage));
  const nlohmann::json& changes = page.at("Changes");
  std::int64_t cursor = since;
  bool blocked = false;
  for (const nlohmann::json& change : changes) {
    if (stopping_)
      return false;
    const std::string type = change.at("ChangeType").get<std::string>();
    const std::string id = change.at("ID").get<std::string>();
    const std::int64_t seq = change.at("Seq").get<std::int64_t>();
    if (type == "NewInstance") {
      if (!ingestQueue_.post([this, id] { ingestInstance(id); }))
        return false;
    } else if (type == "NewStudy" || type == "StableStudy") {
      ingestQueue_.drain();  // the study's instances seen so far are indexed before it is judged
      const std::optional<nlohmann::json> study = restGetJsonIfExists("/studies/" + id);
      if (study && type == "NewStudy" && !study->value("IsStable", true)) {
        blocked = true;  // its StableStudy will come (live), or the next start will find it stable
        break;
      }
      // A study that cannot be annotated (logged by the annotator) does not hold up the rest of the log;
      // its next StableStudy or POST /comcl/studies/{id}/score tries again.
      if (study)
        annotateNow(id, false);
    }
    cursor = seq;
  }
  ingestQueue_.drain();
  if (stopping_)
    return false;
  if (cursor != since) {
    index_.setCursor(kCursorName, cursor);
    catchUpCursor_ = cursor;
  }
  return !blocked && !page.value("Done", true);
}

// --- REST views

nlohmann::json Engine::status() {
  const std::optional<ActiveModel> model = scoring_.activeModel();
  const ScoringStats scoring = scoring_.stats();
  std::vector<double> ingest, annotation;
  {
    std::lock_guard lock(stateMutex_);
    ingest = ingestLatencies_;
    annotation = annotationLatencies_;
  }
  std::string catchUpError;
  {
    std::lock_guard lock(catchUpMutex_);
    catchUpError = catchUpError_;
  }
  nlohmann::json modelJson = nullptr;
  if (model) {
    modelJson = {
        {"Version", model->version}, {"Description", model->description}, {"Findings", model->findings}};
  }
  return {{"Version", COMCL_VERSION},
          {"Device", deviceText_},
          {"Database", config_.databasePath},
          {"SchemaVersion", storage::currentSchemaVersion()},
          {"Cache", config_.cachePath},
          {"ActiveModel", modelJson},
          {"Training", training_.current()},
          {"ModelError", scoring_.lastError()},
          {"Queues",
           {{"Ingest", ingestQueue_.pending()},
            {"IngestCapacity", ingestQueue_.capacity()},
            {"Scoring", scoring_.pending()}}},
          {"Instances", index_.instanceCount()},
          {"ByDecodeState", index_.decodeStateCounts()},
          {"ByQualityFlag", index_.qualityFlagCounts()},
          {"StudiesAnnotated", index_.studyAnnotationCount()},
          {"Counters",
           {{"Processed", counters_.processed.load()},
            {"Failed", counters_.failed.load()},
            {"DroppedFromQueue", counters_.dropped.load()},
            {"Annotated", counters_.annotated.load()},
            {"AnnotationsUnchanged", counters_.unchanged.load()},
            {"AnnotationFailures", counters_.annotationFailures.load()},
            {"ImagesScored", scoring.imagesScored}}},
          {"LatencyMs",
           {{"IngestP50", percentile(ingest, 0.5)},
            {"IngestP95", percentile(ingest, 0.95)},
            {"AnnotationP50", percentile(annotation, 0.5)},
            {"AnnotationP95", percentile(annotation, 0.95)}}},
          {"Scoring",
           {{"Batches", scoring.batches},
            {"ForwardSeconds", scoring.forwardSeconds},
            {"PipelineSeconds", scoring.pipelineSeconds}}},
          {"ChangeCursor", catchUpCursor_.load()},
          {"CatchUpError", catchUpError}};
}

std::optional<nlohmann::json> Engine::studyJson(const std::string& studyId) {
  const std::optional<storage::StudyAnnotationRecord> annotation = index_.studyAnnotation(studyId);
  const std::vector<storage::InstanceRecord> rows = index_.instancesOfStudyResource(studyId);
  if (!annotation && rows.empty())
    return std::nullopt;
  nlohmann::json json = {{"OrthancId", studyId}, {"Instances", rows.size()}};
  if (annotation) {
    json["Annotated"] = true;
    json["AnnotatedAt"] = annotation->annotatedAt;
    json["ModelVersion"] =
        annotation->modelVersion ? nlohmann::json(*annotation->modelVersion) : nlohmann::json(nullptr);
    json["QualityFlag"] = optionalText(annotation->qualityFlag);
    json["StructuredReport"] = annotation->srInstanceId;
    json["Report"] = nlohmann::json::parse(annotation->reportJson);
  } else {
    json["Annotated"] = false;  // indexed, not stable yet
  }
  return json;
}

std::optional<nlohmann::json> Engine::instanceJson(const std::string& instanceId) {
  const std::optional<storage::InstanceRecord> row = index_.findInstance(instanceId);
  if (!row)
    return std::nullopt;
  nlohmann::json json = {{"OrthancId", row->resourceId},
                         {"Study", row->studyResourceId},
                         {"Series", row->seriesResourceId},
                         {"Patient", row->patientResourceId},
                         {"SOPInstanceUID", row->sopInstanceUid},
                         {"SOPClassUID", row->sopClassUid},
                         {"StudyInstanceUID", row->studyInstanceUid},
                         {"ViewPosition", optionalText(row->viewPosition)},
                         {"Modality", optionalText(row->modality)},
                         {"Rows", row->rows},
                         {"Columns", row->cols},
                         {"TransferSyntaxUID", row->transferSyntaxUid},
                         {"DecodeState", std::string(storage::toString(row->decodeState))},
                         {"DecodeReason", row->decodeReason},
                         {"MetadataIssues", row->metadataIssues}};
  const std::optional<storage::QualityRecord> quality = index_.quality(row->id);
  json["Quality"] = quality ? qualityJson(*quality) : nlohmann::json(nullptr);
  nlohmann::json predictions = nlohmann::json::array();
  for (const storage::PredictionRecord& p : index_.predictions(row->id))
    predictions.push_back({{"ModelVersion", p.modelVersion}, {"Finding", p.finding}, {"Score", p.score}});
  json["Predictions"] = predictions;
  return json;
}

nlohmann::json Engine::qualitySummary() {
  return {{"Instances", index_.instanceCount()},
          {"ByDecodeState", index_.decodeStateCounts()},
          {"ByFlag", index_.qualityFlagCounts()},
          {"ByReason", index_.qualityReasonCounts()},
          {"Reasons", imaging::qualityReasons()}};
}

void Engine::publishMetrics() {
  OrthancPluginContext* context = orthancContext();
  std::vector<double> ingest;
  double lastIngest = 0, lastAnnotation = 0;
  {
    std::lock_guard lock(stateMutex_);
    ingest = ingestLatencies_;
    lastIngest = ingestLatencies_.empty() ? 0 : ingestLatencies_.back();
    lastAnnotation = annotationLatencies_.empty() ? 0 : annotationLatencies_.back();
  }
  const auto set = [context](const char* name, double value, OrthancPluginMetricsType type) {
    OrthancPluginSetMetricsValue(context, name, static_cast<float>(value), type);
  };
  set("comcl_ingest_queue_depth", static_cast<double>(ingestQueue_.pending()),
      OrthancPluginMetricsType_Default);
  set("comcl_scoring_queue_depth", static_cast<double>(scoring_.pending()), OrthancPluginMetricsType_Default);
  set("comcl_instances_processed", static_cast<double>(counters_.processed.load()),
      OrthancPluginMetricsType_Default);
  set("comcl_instances_failed", static_cast<double>(counters_.failed.load()),
      OrthancPluginMetricsType_Default);
  set("comcl_instances_dropped_from_queue", static_cast<double>(counters_.dropped.load()),
      OrthancPluginMetricsType_Default);
  set("comcl_studies_annotated", static_cast<double>(counters_.annotated.load()),
      OrthancPluginMetricsType_Default);
  set("comcl_annotation_failures", static_cast<double>(counters_.annotationFailures.load()),
      OrthancPluginMetricsType_Default);
  set("comcl_ingest_latency_ms", lastIngest, OrthancPluginMetricsType_Timer);
  set("comcl_ingest_latency_p95_ms", percentile(ingest, 0.95), OrthancPluginMetricsType_Default);
  set("comcl_annotation_latency_ms", lastAnnotation, OrthancPluginMetricsType_Timer);
}

}  // namespace comcl::plugin
