// Background data path: worker threads produce the batches of steps first..last in parallel (reading the
// image cache, building tensors in pinned memory when the device is a GPU) while the device computes, and
// next() hands them out in step order. At most `depth` batches wait ready, so memory stays bounded. A
// worker's exception is rethrown by next() for the step it failed on. The destructor stops and joins the
// workers.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace comcl::training {

template <typename Batch>
class OrderedPrefetcher {
 public:
  using Producer = std::function<Batch(std::int64_t step)>;

  OrderedPrefetcher(Producer produce, std::int64_t firstStep, std::int64_t endStep, int workers, int depth)
      : produce_(std::move(produce)),
        nextToClaim_(firstStep),
        nextToHand_(firstStep),
        end_(endStep),
        depth_(std::max(1, depth)) {
    for (int i = 0; i < std::max(1, workers); ++i)
      threads_.emplace_back([this] { work(); });
  }
  ~OrderedPrefetcher() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    for (auto& t : threads_)
      t.join();
  }
  OrderedPrefetcher(const OrderedPrefetcher&) = delete;
  OrderedPrefetcher& operator=(const OrderedPrefetcher&) = delete;

  // The batch of the next step, waiting for it if needed; empty once every step was handed out.
  std::optional<Batch> next() {
    std::unique_lock lock(mutex_);
    if (nextToHand_ >= end_)
      return std::nullopt;
    changed_.wait(lock, [this] { return ready_.count(nextToHand_) > 0; });
    auto node = ready_.extract(nextToHand_);
    ++nextToHand_;
    changed_.notify_all();
    Slot slot = std::move(node.mapped());
    if (slot.error)
      std::rethrow_exception(slot.error);
    return std::move(slot.batch);
  }

 private:
  struct Slot {
    std::optional<Batch> batch;
    std::exception_ptr error;
  };

  void work() {
    while (true) {
      std::int64_t step;
      {
        std::unique_lock lock(mutex_);
        // Claim a step only while fewer than `depth` batches are ahead of the consumer.
        changed_.wait(lock, [this] {
          return stopping_ || nextToClaim_ >= end_ || nextToClaim_ < nextToHand_ + depth_;
        });
        if (stopping_ || nextToClaim_ >= end_)
          return;
        step = nextToClaim_++;
      }
      Slot slot;
      try {
        slot.batch.emplace(produce_(step));
      } catch (...) {
        slot.error = std::current_exception();
      }
      {
        std::lock_guard lock(mutex_);
        ready_.emplace(step, std::move(slot));
      }
      changed_.notify_all();
    }
  }

  Producer produce_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::int64_t, Slot> ready_;
  std::int64_t nextToClaim_;
  std::int64_t nextToHand_;
  std::int64_t end_;
  int depth_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace comcl::training
