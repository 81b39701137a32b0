// Long work of the plugin (a training run, a re-scoring pass) as Orthanc's jobs engine and the REST API see
// it: a state, a progress fraction, a JSON summary, a cancel request. The work runs on a thread the plugin
// owns (TaskRunner), not on Orthanc's job worker: the Orthanc job (orthanc_job.h) only watches the task, so
// the plugin can stop and join the work at shutdown whatever Orthanc does with the job object. No Orthanc
// dependency, so unit tests drive it directly.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

namespace comcl::plugin {

class BackgroundTask {
 public:
  enum class State { Running, Succeeded, Failed, Canceled };
  // Why the work was asked to stop: a user cancelled it, or Orthanc paused or stopped its job (shutdown).
  enum class StopReason { None, Canceled, Interrupted };

  explicit BackgroundTask(std::string type) : type_(std::move(type)) {}

  const std::string& type() const { return type_; }

  // Asks the work to stop; the first reason given stays.
  void requestStop(StopReason reason);
  StopReason stopReason() const;
  // The flag the work polls (training::Pretrainer and friends take it).
  const std::atomic<bool>* stopFlag() const { return &stopRequested_; }

  // By the work: the fraction done (0..1, clamped) and fields merged into the summary.
  void update(double fraction, const nlohmann::json& fields);
  void finish(State state, const std::string& error = "");

  struct Snapshot {
    State state = State::Running;
    double fraction = 0;
    nlohmann::json content;  // the summary, with "State" and, on failure, "Error"
  };
  Snapshot snapshot() const;
  State state() const;
  // Waits until the work finished or `timeout` passed; true when it finished.
  bool waitFinished(std::chrono::milliseconds timeout) const;

 private:
  const std::string type_;
  std::atomic<bool> stopRequested_{false};
  mutable std::mutex mutex_;
  mutable std::condition_variable finished_;
  StopReason stopReason_ = StopReason::None;
  State state_ = State::Running;
  double fraction_ = 0;
  nlohmann::json content_ = nlohmann::json::object();
};

const char* toString(BackgroundTask::State state);

// Runs at most one task at a time, each on a thread of its own; stop() asks the running one to stop and
// joins it (shutdown), so no work outlives the engine.
class TaskRunner {
 public:
  using Work = std::function<void(BackgroundTask&)>;
  TaskRunner() = default;
  ~TaskRunner() { stop(); }
  TaskRunner(const TaskRunner&) = delete;
  TaskRunner& operator=(const TaskRunner&) = delete;

  // Starts `work` on a new thread and returns its task, or returns nullptr when a task still runs (then
  // `running` gets that one). An exception thrown by `work` fails the task with its message (Canceled when
  // a stop was requested); work that returns without finishing the task succeeds it.
  std::shared_ptr<BackgroundTask> start(const std::string& type, Work work,
                                        std::shared_ptr<BackgroundTask>* running = nullptr);
  // The running task, or the last one (finished); nullptr before the first.
  std::shared_ptr<BackgroundTask> current() const;
  // Stops the running task with `reason` and waits for its thread. Later starts are refused.
  void stop(BackgroundTask::StopReason reason = BackgroundTask::StopReason::Interrupted);

 private:
  mutable std::mutex mutex_;
  bool stopped_ = false;
  std::shared_ptr<BackgroundTask> task_;
  std::thread thread_;
};

}  // namespace comcl::plugin
