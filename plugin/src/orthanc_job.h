// An Orthanc job (GET /jobs/{id}, POST /jobs/{id}/cancel) watching a BackgroundTask that runs on a thread of
// the plugin's own. Orthanc's job worker only polls: step() waits up to a quarter of a second for the task
// and reports it; stop() passes a cancel (user) or a pause (user, or Orthanc shutting down) to the task as a
// stop request and waits for the work to end. The job is not serialised: Orthanc does not resume it after a
// restart (the training service marks such runs interrupted instead).
#pragma once

#include <memory>
#include <string>

#include "background_task.h"

namespace comcl::plugin {

// Submits the job (type: the task's type) and returns its id; throws std::runtime_error when Orthanc refuses.
std::string submitWatchingJob(const std::shared_ptr<BackgroundTask>& task, int priority = 0);

}  // namespace comcl::plugin
