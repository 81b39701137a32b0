#include "background_task.h"

#include <pthread.h>

#include <algorithm>

namespace comcl::plugin {

const char* toString(BackgroundTask::State state) {
  switch (state) {
    case BackgroundTask::State::Running:
      return "Running";
    case BackgroundTask::State::Succeeded:
      return "Succeeded";
    case BackgroundTask::State::Failed:
      return "Failed";
    case BackgroundTask::State::Canceled:
      return "Canceled";
  }
  return "Unknown";
}

void BackgroundTask::requestStop(StopReason reason) {
  std::lock_guard lock(mutex_);
  if (stopReason_ == StopReason::None)
    stopReason_ = reason;
  stopRequested_ = true;
}

BackgroundTask::StopReason BackgroundTask::stopReason() const {
  std::lock_guard lock(mutex_);
  return stopReason_;
}

void BackgroundTask::update(double fraction, const nlohmann::json& fields) {
  std::lock_guard lock(mutex_);
  if (state_ != State::Running)
    return;
  fraction_ = std::clamp(fraction, 0.0, 1.0);
  if (fields.is_object())
    content_.update(fields);
}

void BackgroundTask::finish(State state, const std::string& error) {
  {
    std::lock_guard lock(mutex_);
    if (state_ != State::Running)
      return;
    state_ = state;
    if (state == State::Succeeded)
      fraction_ = 1;
    if (!error.empty())
      content_["Error"] = error;
  }
  finished_.notify_all();
}

BackgroundTask::Snapshot BackgroundTask::snapshot() const {
  std::lock_guard lock(mutex_);
  Snapshot s{state_, fraction_, content_};
  s.content["State"] = toString(state_);
  return s;
}

BackgroundTask::State BackgroundTask::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

bool BackgroundTask::waitFinished(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return finished_.wait_for(lock, timeout, [this] { return state_ != State::Running; });
}

std::shared_ptr<BackgroundTask> TaskRunner::start(const std::string& type, Work work,
                                                  std::shared_ptr<BackgroundTask>* running) {
  std::lock_guard lock(mutex_);
  if (stopped_)
    throw std::runtime_error("the plugin is stopping: no new " + type + " starts");
  if (task_ && task_->state() == BackgroundTask::State::Running) {
    if (running)
      *running = task_;
    return nullptr;
  }
  if (thread_.joinable())
    thread_.join();  // the last task finished: its thread is ending or gone
  auto task = std::make_shared<BackgroundTask>(type);
  task_ = task;
  thread_ = std::thread([task, work = std::move(work)] {
    // Named after the task (top -H, gdb), not after the HTTP thread that started it; Linux allows 15 bytes.
    pthread_setname_np(pthread_self(), task->type().substr(0, 15).c_str());
    try {
      work(*task);
      task->finish(BackgroundTask::State::Succeeded);
    } catch (const std::exception& e) {
      task->finish(*task->stopFlag() ? BackgroundTask::State::Canceled : BackgroundTask::State::Failed,
                   e.what());
    } catch (...) {
      task->finish(BackgroundTask::State::Failed, "unknown error");
    }
  });
  return task;
}

std::shared_ptr<BackgroundTask> TaskRunner::current() const {
  std::lock_guard lock(mutex_);
  return task_;
}

void TaskRunner::stop(BackgroundTask::StopReason reason) {
  std::thread thread;
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    if (task_)
      task_->requestStop(reason);
    thread = std::move(thread_);
  }
  if (thread.joinable())
    thread.join();
}

}  // namespace comcl::plugin
