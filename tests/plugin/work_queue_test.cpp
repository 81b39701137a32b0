// The bounded work queue: producers are never blocked by tryPost, a full queue says so, stop drops what
// waits and joins what runs.
#include "work_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>

namespace comcl::plugin {
namespace {

// A gate that tasks wait on until the test opens it.
class Gate {
 public:
  void open() { promise_.set_value(); }
  void wait() const { future_.wait(); }

 private:
  std::promise<void> promise_;
  std::shared_future<void> future_ = promise_.get_future().share();
};

TEST(WorkQueue, AFullQueueRefusesAtOnceAndAcceptsAgainWhenWorkIsDone) {
  WorkQueue queue(1, 3);
  Gate gate;
  std::atomic<int> ran{0};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(queue.tryPost([&] {
      gate.wait();
      ++ran;
    }));
  }
  EXPECT_EQ(queue.pending(), 3u);
  EXPECT_FALSE(queue.tryPost([&] { ++ran; }));  // full: refused without waiting
  gate.open();
  queue.drain();
  EXPECT_EQ(ran.load(), 3);
  EXPECT_EQ(queue.pending(), 0u);
  EXPECT_TRUE(queue.tryPost([&] { ++ran; }));
  queue.drain();
  EXPECT_EQ(ran.load(), 4);
}

TEST(WorkQueue, PostWaitsForRoom) {
  WorkQueue queue(1, 1);
  Gate gate;
  std::atomic<int> ran{0};
  ASSERT_TRUE(queue.tryPost([&] {
    gate.wait();
    ++ran;
  }));
  auto second = std::async(std::launch::async, [&] { return queue.post([&] { ++ran; }); });
  EXPECT_EQ(second.wait_for(std::chrono::milliseconds(50)),
            std::future_status::timeout);  // still waiting for room
  gate.open();
  EXPECT_TRUE(second.get());
  queue.drain();
  EXPECT_EQ(ran.load(), 2);
}

TEST(WorkQueue, StopDropsWaitingTasksLetsTheRunningOneFinishAndRefusesNewOnes) {
  WorkQueue queue(1, 10);
  Gate started, gate;
  std::atomic<int> ran{0};
  ASSERT_TRUE(queue.tryPost([&] {
    started.open();
    gate.wait();
    ++ran;
  }));
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(queue.tryPost([&] { ++ran; }));
  started.wait();
  queue.close();  // what stop() does first; the running task is still inside
  gate.open();
  queue.stop();
  EXPECT_EQ(ran.load(), 1);
  EXPECT_TRUE(queue.stopped());
  EXPECT_FALSE(queue.tryPost([&] { ++ran; }));
  EXPECT_FALSE(queue.post([&] { ++ran; }));
  queue.stop();  // idempotent
}

TEST(WorkQueue, ATaskThatThrowsDoesNotKillItsWorker) {
  WorkQueue queue(1, 4);
  std::atomic<int> ran{0};
  ASSERT_TRUE(queue.tryPost([] { throw std::runtime_error("bad instance"); }));
  ASSERT_TRUE(queue.tryPost([&] { ++ran; }));
  queue.drain();
  EXPECT_EQ(ran.load(), 1);
}

}  // namespace
}  // namespace comcl::plugin
