// Training runs of the plugin (POST /comcl/train, GET /comcl/runs): one at a time, each on a thread of its
// own (TaskRunner), recorded in the index's training_runs table from request to outcome, with stage
// timings, the loss curve and the held-out metrics. A run that succeeds registers a candidate version; the
// promotion policy (always / if-better / never) decides whether it becomes active. Runs a previous process
// left running (Orthanc stopped or killed) are marked interrupted at start; the registry is untouched by
// them, since a run registers its version only at its very end. No Orthanc dependency.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "background_task.h"
#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "training_run.h"

namespace comcl::plugin {

// A training request while another run is going (HTTP 409).
class TrainingBusy : public std::runtime_error {
 public:
  TrainingBusy(std::int64_t runId, std::string jobId);
  std::int64_t runId() const { return runId_; }
  const std::string& jobId() const { return jobId_; }

 private:
  std::int64_t runId_;
  std::string jobId_;
};

struct TrainingSettings {
  std::string modelDirectory;
  std::string runDirectory;  // each run checkpoints into <runDirectory>/run-<id>
  std::string promotion = "if-better";
};

// The promotion decision for a candidate's metrics against the active version's (either may be null).
struct PromotionDecision {
  bool promote = false;
  std::string reason;
};
PromotionDecision decidePromotion(const std::string& policy, const nlohmann::json& candidateMetrics,
                                  const std::optional<nlohmann::json>& activeMetrics);
// Mean of the per-label held-out AUC means over `labels` (all binary labels when empty); empty when none.
std::optional<double> meanHeldOutAuc(const nlohmann::json& metrics,
                                     const std::vector<std::string>& labels = {});

class TrainingService {
 public:
  // Makes `version` the active one (the engine loads it into the scorer and may start a re-scoring job);
  // returns what to record of it.
  using Activate = std::function<nlohmann::json(int version)>;

  // The index and cache must outlive the service. Marks runs left "running" or "pending" as interrupted.
  TrainingService(storage::Index& index, const storage::ImageCache& cache, TrainingSettings settings,
                  Activate activate);
  ~TrainingService();
  TrainingService(const TrainingService&) = delete;
  TrainingService& operator=(const TrainingService&) = delete;

  struct Started {
    std::int64_t runId = 0;
    std::shared_ptr<BackgroundTask> task;
  };
  // Records the run and starts it; TrainingBusy when one runs.
  Started start(TrainRequest request);
  // Records the Orthanc job watching a run (GET /comcl/runs shows it; a 409 names it).
  void attachJob(std::int64_t runId, const std::string& jobId);

  // GET /comcl/runs (every run, newest last) and /comcl/runs/{id}.
  nlohmann::json runs();
  std::optional<nlohmann::json> run(std::int64_t id);
  // The running run's summary (for /comcl/status), or null.
  nlohmann::json current();
  // Runs marked interrupted when the service started.
  const std::vector<std::int64_t>& interruptedAtStart() const { return interruptedAtStart_; }

  // Stops the running run (it is recorded as interrupted) and waits for its thread.
  void stop();

 private:
  void execute(BackgroundTask& task, std::int64_t runId, const TrainRequest& request);
  void finishSucceeded(BackgroundTask& task, std::int64_t runId, const TrainOutcome& outcome,
                       nlohmann::json details);
  void record(std::int64_t runId, const std::function<void(storage::TrainingRunRecord&)>& change);

  storage::Index& index_;
  const storage::ImageCache& cache_;
  const TrainingSettings settings_;
  const Activate activate_;
  std::vector<std::int64_t> interruptedAtStart_;
  std::mutex mutex_;        // runId_ / jobId_ of the current run
  std::mutex recordMutex_;  // record()
  std::int64_t runId_ = 0;
  std::string jobId_;
  TaskRunner runner_;
};

nlohmann::json runJson(const storage::TrainingRunRecord& record);

}  // namespace comcl::plugin
