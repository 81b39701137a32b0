// A bounded pool of worker threads (Boost.Asio thread_pool) for the plugin's ingest work. Orthanc's change
// thread must never wait on us, so producers either get a slot at once (tryPost) or are told the queue is
// full and leave the work to the change-log catch-up. The catch-up, on its own thread, may wait for room.
#pragma once

#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>

namespace comcl::plugin {

class WorkQueue {
 public:
  WorkQueue(int threads, std::size_t capacity)
      : pool_(static_cast<std::size_t>(threads)), capacity_(capacity) {}
  ~WorkQueue() { stop(); }
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Queues `task` if fewer than `capacity` tasks are waiting or running; false otherwise (or once stopped).
  bool tryPost(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      if (stopped_ || pending_ >= capacity_)
        return false;
      ++pending_;
    }
    submit(std::move(task));
    return true;
  }

  // Waits until there is room (or the queue stops: then false). Never call from Orthanc's threads.
  bool post(std::function<void()> task) {
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return stopped_ || pending_ < capacity_; });
      if (stopped_)
        return false;
      ++pending_;
    }
    submit(std::move(task));
    return true;
  }

  // Waits until every queued task has run (or the queue stops).
  void drain() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return stopped_ || pending_ == 0; });
  }

  std::size_t pending() const {
    std::lock_guard lock(mutex_);
    return pending_;
  }
  std::size_t capacity() const { return capacity_; }
  bool stopped() const {
    std::lock_guard lock(mutex_);
    return stopped_;
  }

  // Refuses new tasks from now on; tasks not yet started will be dropped (their work is found again in the
  // change log). Does not wait.
  void close() {
    {
      std::lock_guard lock(mutex_);
      stopped_ = true;
    }
    changed_.notify_all();
  }

  // close(), then waits for the running tasks to finish and joins the threads. Idempotent.
  void stop() {
    close();
    {
      std::lock_guard lock(mutex_);
      if (joined_)
        return;
      joined_ = true;
    }
    pool_.stop();
    pool_.join();
  }

 private:
  void submit(std::function<void()> task) {
    boost::asio::post(pool_, [this, task = std::move(task)] {
      bool run = false;
      {
        std::lock_guard lock(mutex_);
        run = !stopped_;
      }
      if (run) {
        try {
          task();
        } catch (...) {  // tasks report their own errors; nothing may kill a worker thread
        }
      }
      {
        std::lock_guard lock(mutex_);
        --pending_;
      }
      changed_.notify_all();
    });
  }

  boost::asio::thread_pool pool_;
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::size_t pending_ = 0;
  bool stopped_ = false;
  bool joined_ = false;
};

}  // namespace comcl::plugin
