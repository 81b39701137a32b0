#include "training_service.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <sstream>

#include "comcl/training/model_io.h"
#include "model_registry.h"

namespace comcl::plugin {

namespace fs = std::filesystem;

namespace {

// Training gives way to Orthanc's HTTP threads, ingest and scoring on a busy CPU: the thread gets a lower
// priority (nice 10), which the threads it starts (LibTorch's OpenMP team, the data loader) inherit.
void lowerThisThreadsPriority() {
  const auto thread = static_cast<id_t>(syscall(SYS_gettid));
  setpriority(PRIO_PROCESS, thread, 10);  // failing leaves the normal priority, which is still correct
}

std::string runDirectoryOf(const std::string& root, std::int64_t runId) {
  return (fs::path(root) / ("run-" + std::to_string(runId))).string();
}

std::string formatAuc(double value) {
  std::ostringstream text;
  text.precision(3);
  text << std::fixed << value;
  return text.str();
}

// finding -> mean held-out AUC of the labels of an evaluation (ProtocolResult::toJson) that have one.
std::map<std::string, double> heldOutAucs(const nlohmann::json& metrics) {
  std::map<std::string, double> aucs;
  if (!metrics.is_object() || !metrics.contains("labels") || !metrics.at("labels").is_array())
    return aucs;
  for (const nlohmann::json& label : metrics.at("labels")) {
    const nlohmann::json auc = label.value("auc", nlohmann::json());
    if (auc.is_object() && auc.contains("mean") && auc.at("mean").is_number())
      aucs[label.value("finding", "")] = auc.at("mean").get<double>();
  }
  return aucs;
}

std::vector<std::string> findingsWithAuc(const nlohmann::json& metrics) {
  std::vector<std::string> findings;
  for (const auto& [finding, auc] : heldOutAucs(metrics))
    findings.push_back(finding);
  return findings;
}

}  // namespace

TrainingBusy::TrainingBusy(std::int64_t runId, std::string jobId)
    : std::runtime_error("training run " + std::to_string(runId) + " is still going" +
                         (jobId.empty() ? std::string() : " (job " + jobId + ")") +
                         ": wait for it or cancel it (POST /jobs/{id}/cancel)"),
      runId_(runId),
      jobId_(std::move(jobId)) {}

std::optional<double> meanHeldOutAuc(const nlohmann::json& metrics, const std::vector<std::string>& labels) {
  const std::map<std::string, double> aucs = heldOutAucs(metrics);
  double sum = 0;
  std::size_t count = 0;
  for (const auto& [finding, auc] : aucs) {
    if (labels.empty() || std::find(labels.begin(), labels.end(), finding) != labels.end()) {
      sum += auc;
      ++count;
    }
  }
  if (count == 0 || (!labels.empty() && count != labels.size()))
    return std::nullopt;
  return sum / static_cast<double>(count);
}

PromotionDecision decidePromotion(const std::string& policy, const nlohmann::json& candidateMetrics,
                                  const std::optional<nlohmann::json>& activeMetrics) {
  if (policy == "never")
    return {false, "Comcl.Promotion is \"never\": activate it with POST /comcl/models/{v}/activate"};
  if (policy == "always")
    return {true, "Comcl.Promotion is \"always\""};
  if (!activeMetrics)
    return {true, "no version was active"};
  // Compare on the binary labels both versions were evaluated on (graded ones have kappa, not AUC).
  std::vector<std::string> common;
  const std::vector<std::string> theirs = findingsWithAuc(*activeMetrics);
  for (const std::string& finding : findingsWithAuc(candidateMetrics)) {
    if (std::find(theirs.begin(), theirs.end(), finding) != theirs.end())
      common.push_back(finding);
  }
  const std::optional<double> candidate =
      common.empty() ? std::nullopt : meanHeldOutAuc(candidateMetrics, common);
  const std::optional<double> active = common.empty() ? std::nullopt : meanHeldOutAuc(*activeMetrics, common);
  if (!candidate || !active)
    return {false,
            "the active version has no held-out AUC on the labels this run evaluated: compare them in "
            "GET /comcl/models and activate by hand"};
  if (*candidate > *active)
    return {true,
            "held-out AUC " + formatAuc(*candidate) + " beats the active version's " + formatAuc(*active)};
  return {false, "held-out AUC " + formatAuc(*candidate) + " does not beat the active version's " +
                     formatAuc(*active)};
}

nlohmann::json runJson(const storage::TrainingRunRecord& record) {
  nlohmann::json json = {
      {"Id", record.id},
      {"State", record.state},
      {"JobId", record.jobId.empty() ? nlohmann::json() : nlohmann::json(record.jobId)},
      {"StartedAt", record.startedAt},
      {"FinishedAt", record.finishedAt ? nlohmann::json(*record.finishedAt) : nlohmann::json()},
      {"Error", record.error},
      {"ModelVersion", record.modelVersion ? nlohmann::json(*record.modelVersion) : nlohmann::json()}};
  json["Request"] = nlohmann::json::parse(record.requestJson, nullptr, false);
  const nlohmann::json details = nlohmann::json::parse(record.detailsJson, nullptr, false);
  if (details.is_object())
    json.update(details);
  return json;
}

TrainingService::TrainingService(storage::Index& index, const storage::ImageCache& cache,
                                 TrainingSettings settings, Activate activate)
    : index_(index), cache_(cache), settings_(std::move(settings)), activate_(std::move(activate)) {
  for (storage::TrainingRunRecord run : index_.trainingRuns()) {
    if (run.state != "running" && run.state != "pending")
      continue;
    run.state = "interrupted";
    run.finishedAt = training::utcNow();
    run.error = "Orthanc stopped during the run; nothing was registered (start a new run)";
    index_.updateTrainingRun(run);
    std::error_code ignored;
    fs::remove_all(runDirectoryOf(settings_.runDirectory, run.id), ignored);
    interruptedAtStart_.push_back(run.id);
  }
}

TrainingService::~TrainingService() {
  stop();
}

void TrainingService::stop() {
  runner_.stop(BackgroundTask::StopReason::Interrupted);
}

TrainingService::Started TrainingService::start(TrainRequest request) {
  std::lock_guard lock(mutex_);
  const std::shared_ptr<BackgroundTask> previous = runner_.current();
  if (previous && previous->state() == BackgroundTask::State::Running)
    throw TrainingBusy(runId_, jobId_);
  storage::TrainingRunRecord run;
  run.state = "running";
  run.requestJson = request.toJson().dump();
  run.detailsJson = nlohmann::json{{"Stage", "queued"}}.dump();
  const std::int64_t runId = index_.insertTrainingRun(run);
  std::shared_ptr<BackgroundTask> busy;
  std::shared_ptr<BackgroundTask> task = runner_.start(
      "ComclTraining",
      [this, runId, request = std::move(request)](BackgroundTask& t) { execute(t, runId, request); }, &busy);
  if (!task) {  // unreachable while mutex_ serialises starts, kept for safety
    record(runId, [](storage::TrainingRunRecord& r) {
      r.state = "failed";
      r.error = "another run started first";
    });
    throw TrainingBusy(runId_, jobId_);
  }
  runId_ = runId;
  jobId_.clear();
  return {runId, task};
}

void TrainingService::attachJob(std::int64_t runId, const std::string& jobId) {
  {
    std::lock_guard lock(mutex_);
    if (runId_ == runId)
      jobId_ = jobId;
  }
  record(runId, [&](storage::TrainingRunRecord& r) { r.jobId = jobId; });
}

void TrainingService::record(std::int64_t runId,
                             const std::function<void(storage::TrainingRunRecord&)>& change) {
  // Read, change, write back: the run's thread and the REST thread attaching the job both do this, so one
  // at a time, or the later write would undo the earlier one.
  std::lock_guard lock(recordMutex_);
  std::optional<storage::TrainingRunRecord> run = index_.trainingRun(runId);
  if (!run)
    return;
  change(*run);
  index_.updateTrainingRun(*run);
}

nlohmann::json TrainingService::runs() {
  nlohmann::json list = nlohmann::json::array();
  for (const storage::TrainingRunRecord& run : index_.trainingRuns())
    list.push_back(runJson(run));
  return list;
}

std::optional<nlohmann::json> TrainingService::run(std::int64_t id) {
  const std::optional<storage::TrainingRunRecord> record = index_.trainingRun(id);
  if (!record)
    return std::nullopt;
  return runJson(*record);
}

nlohmann::json TrainingService::current() {
  const std::shared_ptr<BackgroundTask> task = runner_.current();
  if (!task || task->state() != BackgroundTask::State::Running)
    return nullptr;
  BackgroundTask::Snapshot snapshot = task->snapshot();
  snapshot.content["Progress"] = snapshot.fraction;
  std::lock_guard lock(mutex_);  // known from the start, before the run's first progress report
  snapshot.content["RunId"] = runId_;
  snapshot.content["JobId"] = jobId_.empty() ? nlohmann::json() : nlohmann::json(jobId_);
  return snapshot.content;
}

void TrainingService::execute(BackgroundTask& task, std::int64_t runId, const TrainRequest& request) {
  lowerThisThreadsPriority();
  const std::string runDirectory = runDirectoryOf(settings_.runDirectory, runId);
  nlohmann::json details = {{"Stage", "snapshot"}, {"Loss", nlohmann::json::array()}};
  int lastEpoch = 0;
  double lastEpochLoss = 0;
  const auto progress = [&](const TrainProgress& p) {
    task.update(p.fraction, {{"RunId", runId},
                             {"Stage", p.stage},
                             {"Epoch", p.epoch},
                             {"Epochs", p.epochs},
                             {"Loss", p.loss},
                             {"ImagesPerSecond", p.imagesPerSecond}});
    const bool epochEnded = p.epoch > lastEpoch && lastEpoch > 0;
    if (epochEnded)
      details["Loss"].push_back(lastEpochLoss);  // the live loss curve; the outcome's replaces it
    if (p.stage != details["Stage"] || epochEnded) {
      details["Stage"] = p.stage;
      record(runId, [&](storage::TrainingRunRecord& r) { r.detailsJson = details.dump(); });
    }
    if (p.epoch > 0) {
      lastEpoch = p.epoch;
      lastEpochLoss = p.epochLoss;
    }
  };
  task.update(0, {{"RunId", runId}, {"Stage", "snapshot"}, {"Method", request.method}});

  try {
    const TrainOutcome outcome = runTraining(request, index_, cache_, settings_.modelDirectory, runDirectory,
                                             runId, progress, task.stopFlag());
    std::error_code ignored;
    fs::remove_all(runDirectory, ignored);  // the checkpoints: the model directory holds what is kept
    finishSucceeded(task, runId, outcome, details);
  } catch (const std::exception& e) {
    const BackgroundTask::StopReason reason = task.stopReason();
    std::error_code ignored;
    fs::remove_all(runDirectory, ignored);
    record(runId, [&](storage::TrainingRunRecord& r) {
      r.state = reason == BackgroundTask::StopReason::Interrupted ? "interrupted"
                : reason == BackgroundTask::StopReason::Canceled  ? "canceled"
                                                                  : "failed";
      r.error = reason == BackgroundTask::StopReason::None ? e.what()
                : reason == BackgroundTask::StopReason::Canceled
                    ? "cancelled by a user; nothing was registered"
                    : "Orthanc stopped or paused the job; nothing was registered";
      r.finishedAt = training::utcNow();
      details["Stage"] = "stopped";
      r.detailsJson = details.dump();
    });
    throw;
  }
}

void TrainingService::finishSucceeded(BackgroundTask& task, std::int64_t runId, const TrainOutcome& outcome,
                                      nlohmann::json details) {
  details["Stage"] = "done";
  details["Stages"] = outcome.stageSeconds;
  details["Loss"] = outcome.epochLosses;
  details["ImagesPerSecond"] = outcome.imagesPerSecond;
  details["Metrics"] = outcome.metrics;
  if (!outcome.lesions.is_null())
    details["Lesions"] = outcome.lesions;
  const std::optional<double> meanAuc = meanHeldOutAuc(outcome.metrics);
  details["MeanHeldOutAuc"] = meanAuc ? nlohmann::json(*meanAuc) : nlohmann::json();

  std::optional<nlohmann::json> activeMetrics;
  if (const std::optional<int> active = activeModelVersion(index_)) {
    if (const auto record = index_.modelVersion(*active))
      activeMetrics = nlohmann::json::parse(record->metricsJson, nullptr, false);
  }
  const PromotionDecision decision = decidePromotion(settings_.promotion, outcome.metrics, activeMetrics);
  nlohmann::json promotion = {
      {"Policy", settings_.promotion}, {"Promoted", false}, {"Reason", decision.reason}};
  if (decision.promote) {
    try {
      promotion["Activation"] = activate_(outcome.modelVersion);
      promotion["Promoted"] = true;
    } catch (const std::exception& e) {
      promotion["Reason"] = decision.reason + "; activation failed: " + e.what();
    }
  }
  details["Promotion"] = promotion;
  record(runId, [&](storage::TrainingRunRecord& r) {
    r.state = "succeeded";
    r.modelVersion = outcome.modelVersion;
    r.finishedAt = training::utcNow();
    r.detailsJson = details.dump();
  });
  task.update(1, {{"Stage", "done"},
                  {"ModelVersion", outcome.modelVersion},
                  {"Promoted", promotion["Promoted"]},
                  {"MeanHeldOutAuc", details["MeanHeldOutAuc"]}});
}

}  // namespace comcl::plugin
