#include "orthanc_job.h"

#include <orthanc/OrthancCPlugin.h>

#include <array>
#include <atomic>
#include <stdexcept>

#include "orthanc_api.h"

namespace comcl::plugin {

namespace {

constexpr auto kStepWait = std::chrono::milliseconds(250);
// How long stop() waits for the work to notice a cancel: one training step or one study's annotation.
constexpr auto kStopWait = std::chrono::seconds(60);

// What Orthanc holds. Orthanc 1.10.1 has no OrthancPluginCreateJob2: GetContent returns a pointer Orthanc
// reads after the call, so the text must stay valid; the job keeps its last texts in a ring and never frees
// the one it returned last (later Orthanc versions added CreateJob2 for this).
struct WatchingJob {
  std::shared_ptr<BackgroundTask> task;
  std::array<std::string, 8> contents;
  std::atomic<std::size_t> next{0};
};

WatchingJob& jobOf(void* job) {
  return *static_cast<WatchingJob*>(job);
}

void finalizeJob(void* job) noexcept {
  delete static_cast<WatchingJob*>(job);
}

float jobProgress(void* job) noexcept {
  try {
    return static_cast<float>(jobOf(job).task->snapshot().fraction);
  } catch (...) {
    return 0;
  }
}

const char* jobContent(void* job) noexcept {
  try {
    WatchingJob& watching = jobOf(job);
    const std::size_t slot = watching.next.fetch_add(1) % watching.contents.size();
    watching.contents[slot] = watching.task->snapshot().content.dump();
    return watching.contents[slot].c_str();
  } catch (...) {
    return "{}";
  }
}

const char* jobSerialized(void*) noexcept {
  return nullptr;  // not saved: a restart does not resume it
}

OrthancPluginJobStepStatus jobStep(void* job) noexcept {
  try {
    const BackgroundTask& task = *jobOf(job).task;
    task.waitFinished(kStepWait);
    switch (task.state()) {
      case BackgroundTask::State::Running:
        return OrthancPluginJobStepStatus_Continue;
      case BackgroundTask::State::Succeeded:
        return OrthancPluginJobStepStatus_Success;
      default:
        return OrthancPluginJobStepStatus_Failure;
    }
  } catch (...) {
    return OrthancPluginJobStepStatus_Failure;
  }
}

OrthancPluginErrorCode jobStop(void* job, OrthancPluginJobStopReason reason) noexcept {
  try {
    BackgroundTask& task = *jobOf(job).task;
    if (reason == OrthancPluginJobStopReason_Canceled || reason == OrthancPluginJobStopReason_Paused) {
      task.requestStop(reason == OrthancPluginJobStopReason_Canceled
                           ? BackgroundTask::StopReason::Canceled
                           : BackgroundTask::StopReason::Interrupted);
      if (!task.waitFinished(kStopWait))
        logWarning(task.type() + ": the work has not stopped yet; it will stop at its next step");
    }
  } catch (...) {
  }
  return OrthancPluginErrorCode_Success;
}

OrthancPluginErrorCode jobReset(void*) noexcept {
  return OrthancPluginErrorCode_Success;  // a finished task stays finished: a resubmitted job fails at once
}

}  // namespace

std::string submitWatchingJob(const std::shared_ptr<BackgroundTask>& task, int priority) {
  auto watching = std::make_unique<WatchingJob>();
  watching->task = task;
  OrthancPluginJob* job =
      OrthancPluginCreateJob(orthancContext(), watching.get(), finalizeJob, task->type().c_str(), jobProgress,
                             jobContent, jobSerialized, jobStep, jobStop, jobReset);
  if (job == nullptr)
    throw std::runtime_error("Orthanc did not create the " + task->type() + " job");
  watching.release();  // Orthanc owns it now and frees it with finalizeJob
  char* id = OrthancPluginSubmitJob(orthancContext(), job, priority);
  if (id == nullptr)
    throw std::runtime_error("Orthanc did not accept the " + task->type() + " job");
  const std::string text(id);
  OrthancPluginFreeString(orthancContext(), id);
  return text;
}

}  // namespace comcl::plugin
