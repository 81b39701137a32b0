// The plugin's engine: everything between Orthanc's callbacks and the index. Orthanc's threads only hand
// work over (change callbacks enqueue ids; REST handlers read state or wait for the annotator); the work
// runs on threads owned here:
// - ingest workers (WorkQueue, bounded): DICOM -> decode -> cache -> index row with quality and flag;
// - the scoring thread (ScoringService): batched forward passes of the active model;
// - the annotator (one thread): study results -> attachment, metadata, optional DICOM SR; deletions;
// - the catch-up thread: re-reads Orthanc's change log from a persisted cursor, so that nothing the queue
//   dropped, or that arrived while the plugin was stopped, is missed.
#pragma once

#include <orthanc/OrthancCPlugin.h>

#include <atomic>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "background_task.h"
#include "comcl/imaging/ingest.h"
#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "model_registry.h"
#include "plugin_config.h"
#include "scoring.h"
#include "study_labels.h"
#include "training_service.h"
#include "work_queue.h"

namespace comcl::plugin {

enum class AnnotationOutcome { Annotated, Unchanged, NotFound, Failed };
const char* toString(AnnotationOutcome outcome);

struct AnnotationResult {
  AnnotationOutcome outcome = AnnotationOutcome::Failed;
  std::string message;
  nlohmann::json report;  // the report written (Annotated) or stored (Unchanged)
};

class Engine {
 public:
  Engine(PluginConfig config, std::string deviceText, torch::Device device);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // OrthancStarted: start the catch-up thread (the workers already run). OrthancStopped / Finalize: stop
  // everything; queued work is dropped (the change log has it) and running work finishes. Idempotent.
  void start();
  void stop();

  // From Orthanc's change thread: never blocks on work.
  void onChange(OrthancPluginChangeType change, OrthancPluginResourceType level, const std::string& id);

  // REST (from Orthanc's HTTP threads, without the global lock).
  nlohmann::json status();
  std::optional<nlohmann::json> studyJson(const std::string& studyId);
  std::optional<nlohmann::json> instanceJson(const std::string& instanceId);
  nlohmann::json qualitySummary();
  // Annotates now (on the annotator thread; the caller waits), `force`: even if nothing changed.
  AnnotationResult annotateNow(const std::string& studyId, bool force);
  const PluginConfig& config() const { return config_; }
  // Study labels given through REST (checked against Comcl.Labels).
  StudyLabels& labels() { return labels_; }
  // The StudyInstanceUID of an Orthanc study the index holds; empty when it holds none of its instances.
  std::optional<std::string> studyInstanceUidOf(const std::string& studyId);
  // The model registry (list, describe, weights); activation goes through activateModel.
  ModelRegistry& models() { return models_; }
  // Activates a model version (ModelRegistry::activate) and loads it into the scorer at once, so that
  // /comcl/status and the next study use it; with Comcl.RescoreOnActivation, starts a re-scoring job
  // ("RescoreJob" in the answer). Empty for an unknown version.
  std::optional<nlohmann::json> activateModel(int version);
  // Starts a training run and the Orthanc job watching it: {"ID": job, "Path", "RunId", "Run"}.
  // TrainingBusy while a run goes.
  nlohmann::json startTraining(TrainRequest request);
  // Training runs (GET /comcl/runs).
  TrainingService& training() { return training_; }
  // Starts a job that annotates every study of the archive again with the active model (a running one is
  // cancelled first): {"ID": job, "Path"}.
  nlohmann::json startRescoring();

  // For Orthanc's metrics endpoint.
  void publishMetrics();

 private:
  struct Counters {
    std::atomic<std::int64_t> processed{0};  // instances ingested (any outcome)
    std::atomic<std::int64_t> failed{0};     // failed or unsupported decodes, and errors
    std::atomic<std::int64_t> dropped{0};    // not queued because the queue was full
    std::atomic<std::int64_t> annotated{0};
    std::atomic<std::int64_t> unchanged{0};
    std::atomic<std::int64_t> annotationFailures{0};
  };

  void ingestInstance(const std::string& instanceId, bool retryUnsupported = false);
  bool isOwnReport(const std::string& instanceId);
  void rememberOwnReport(const std::string& instanceId);
  void queueAnnotation(const std::string& studyId);
  AnnotationResult annotate(const std::string& studyId, bool force);
  void removeResource(storage::ResourceLevel level, const std::string& id);
  void catchUpLoop();
  // Deletions made while the plugin was not running leave no trace in the change log: at start, every
  // study the index knows is checked against Orthanc, and rows of studies or instances Orthanc no longer
  // has are removed. Returns how many instance rows went.
  std::size_t reconcileDeletions();
  bool catchUpPage();  // true when more changes wait
  void recordLatency(std::vector<double>& window, double milliseconds);
  void rescoreArchive(BackgroundTask& task);
  void warnOnce(const std::string& key, const std::string& message);

  const PluginConfig config_;
  const std::string deviceText_;
  storage::Index index_;
  storage::ImageCache cache_;
  imaging::Ingestor ingestor_;
  ScoringService scoring_;
  ModelRegistry models_;
  StudyLabels labels_;
  WorkQueue ingestQueue_;
  boost::asio::thread_pool annotator_{1};
  TrainingService training_;  // after what its runs use (index, cache, models, scoring), so it stops first
  TaskRunner rescoring_;

  std::mutex stateMutex_;
  std::unordered_set<std::string> ownReports_;
  std::set<std::string> queuedStudies_;  // StableStudy seen, annotation not started yet
  std::set<std::string> warned_;
  std::vector<double> ingestLatencies_;      // last N, milliseconds
  std::vector<double> annotationLatencies_;  // last N, milliseconds

  Counters counters_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> started_{false};
  std::mutex catchUpMutex_;
  std::condition_variable catchUpWake_;
  std::thread catchUpThread_;
  std::string catchUpError_;
  std::atomic<std::int64_t> catchUpCursor_{0};
};

}  // namespace comcl::plugin
