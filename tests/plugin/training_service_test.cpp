// Training runs as the REST API drives them, without Orthanc: one at a time (a second request is refused
// with the running run's id), recorded from request to outcome (stage timings, loss curve, metrics), the
// promotion policy, cancel and shutdown (nothing registered), and runs a killed process left "running"
// marked interrupted at the next start. Also the task runner underneath.
#include "training_service.h"

#include <gtest/gtest.h>
#include <pthread.h>

#include <array>
#include <filesystem>

#include "stored_split_archive.h"

namespace comcl::plugin {
namespace {

const LabelSet kLabels = {{"finding", 2}};
constexpr auto kLongWait = std::chrono::minutes(5);

TEST(TaskRunner, RunsOneTaskAtATimeAndReportsHowItEnded) {
  TaskRunner runner;
  std::mutex gate;
  std::unique_lock hold(gate);
  std::array<char, 16> threadName{};
  auto first = runner.start("ComclTrainingRun", [&](BackgroundTask& task) {
    pthread_getname_np(pthread_self(), threadName.data(), threadName.size());
    task.update(0.5, {{"Half", true}});
    std::lock_guard wait(gate);  // until the test lets it finish
  });
  ASSERT_TRUE(first);
  std::shared_ptr<BackgroundTask> running;
  EXPECT_FALSE(runner.start(
      "Test", [](BackgroundTask&) {}, &running));
  EXPECT_EQ(running, first);
  hold.unlock();
  ASSERT_TRUE(first->waitFinished(kLongWait));
  EXPECT_EQ(first->state(), BackgroundTask::State::Succeeded);
  EXPECT_EQ(first->snapshot().fraction, 1.0);
  EXPECT_EQ(first->snapshot().content.at("Half"), true);
  EXPECT_STREQ(threadName.data(), "ComclTrainingRu");  // the task's type, cut to Linux's 15 bytes

  auto failing = runner.start("Test", [](BackgroundTask&) { throw std::runtime_error("disk full"); });
  ASSERT_TRUE(failing && failing->waitFinished(kLongWait));
  EXPECT_EQ(failing->state(), BackgroundTask::State::Failed);
  EXPECT_EQ(failing->snapshot().content.at("Error"), "disk full");
  EXPECT_EQ(failing->snapshot().content.at("State"), "Failed");

  auto stopping = runner.start("Test", [](BackgroundTask& task) {
    while (!*task.stopFlag())
      std::this_thread::yield();
    throw std::runtime_error("stopped");
  });
  ASSERT_TRUE(stopping);
  stopping->requestStop(BackgroundTask::StopReason::Canceled);
  stopping->requestStop(BackgroundTask::StopReason::Interrupted);  // the first reason stays
  ASSERT_TRUE(stopping->waitFinished(kLongWait));
  EXPECT_EQ(stopping->state(), BackgroundTask::State::Canceled);
  EXPECT_EQ(stopping->stopReason(), BackgroundTask::StopReason::Canceled);

  runner.stop();
  EXPECT_THROW(runner.start("Test", [](BackgroundTask&) {}), std::runtime_error);
}

nlohmann::json metricsWithAuc(const std::vector<std::pair<std::string, double>>& labels) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [name, auc] : labels)
    list.push_back({{"finding", name}, {"graded", false}, {"auc", {{"mean", auc}, {"std", 0}, {"n", 1}}}});
  return {{"labels", list}};
}

TEST(Promotion, FollowsThePolicyAndComparesHeldOutAucOnCommonLabels) {
  const nlohmann::json better = metricsWithAuc({{"a", 0.8}, {"b", 0.7}});
  const nlohmann::json worse = metricsWithAuc({{"a", 0.6}, {"b", 0.7}});
  EXPECT_TRUE(decidePromotion("always", worse, better).promote);
  EXPECT_FALSE(decidePromotion("never", better, std::nullopt).promote);
  EXPECT_TRUE(decidePromotion("if-better", worse, std::nullopt).promote);  // nothing active
  EXPECT_TRUE(decidePromotion("if-better", better, worse).promote);
  EXPECT_FALSE(decidePromotion("if-better", worse, better).promote);
  EXPECT_FALSE(decidePromotion("if-better", better, better).promote);  // a tie does not beat
  // Only the labels both were evaluated on count: on "a" alone the candidate is better.
  EXPECT_TRUE(decidePromotion("if-better", metricsWithAuc({{"a", 0.7}, {"c", 0.1}}),
                              metricsWithAuc({{"a", 0.6}, {"b", 0.9}}))
                  .promote);
  const PromotionDecision incomparable =
      decidePromotion("if-better", metricsWithAuc({{"a", 0.9}}), metricsWithAuc({{"b", 0.5}}));
  EXPECT_FALSE(incomparable.promote);
  EXPECT_NE(incomparable.reason.find("activate by hand"), std::string::npos) << incomparable.reason;
  nlohmann::json withGrade = metricsWithAuc({{"a", 0.9}});  // a graded label has kappa, not AUC
  withGrade["labels"].push_back({{"finding", "grade"}, {"graded", true}, {"kappa", {{"mean", 0.4}}}});
  EXPECT_TRUE(decidePromotion("if-better", withGrade, withGrade).promote == false);  // a tie
  EXPECT_TRUE(decidePromotion("if-better", withGrade, metricsWithAuc({{"a", 0.8}})).promote);
  EXPECT_DOUBLE_EQ(*meanHeldOutAuc(better), 0.75);
  EXPECT_FALSE(meanHeldOutAuc(nlohmann::json::object()));
}

class TrainingServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { comcl::testing::addPatientsWithStoredSplit(archive_); }
  TrainRequest request(int epochs) const {
    return TrainRequest::fromJson(
        {{"Method", "medaug"}, {"Epochs", epochs}, {"ImageSize", 16}, {"BatchSize", 8}, {"Device", "cpu"}},
        kLabels);
  }
  std::unique_ptr<TrainingService> service(const std::string& promotion) {
    TrainingSettings settings{archive_.dir().file("models"), archive_.dir().file("runs"), promotion};
    return std::make_unique<TrainingService>(archive_.index(), archive_.cache(), settings,
                                             [this](int version) {
                                               activated_.push_back(version);
                                               archive_.index().activateModelVersion(version);
                                               return nlohmann::json{{"Active", version}};
                                             });
  }
  std::string stateOf(std::int64_t run) { return archive_.index().trainingRun(run)->state; }

  comcl::testing::ArchiveFixture archive_{32};
  std::vector<int> activated_;
};

TEST_F(TrainingServiceTest, ARunIsRecordedFromRequestToOutcomeAndPromotedWhenNothingIsActive) {
  auto training = service("if-better");
  const TrainingService::Started started = training->start(request(2));
  training->attachJob(started.runId, "job-1");
  ASSERT_TRUE(started.task->waitFinished(kLongWait));
  ASSERT_EQ(started.task->state(), BackgroundTask::State::Succeeded)
      << started.task->snapshot().content.dump();

  const nlohmann::json run = *training->run(started.runId);
  EXPECT_EQ(run.at("State"), "succeeded");
  EXPECT_EQ(run.at("JobId"), "job-1");
  EXPECT_EQ(run.at("ModelVersion"), 1);
  EXPECT_EQ(run.at("Request").at("Epochs"), 2);
  EXPECT_FALSE(run.at("FinishedAt").is_null());
  for (const char* stage : {"snapshot", "pre-train", "heads", "register"})
    EXPECT_TRUE(run.at("Stages").contains(stage)) << stage << " in " << run.dump();
  ASSERT_EQ(run.at("Loss").size(), 2u);  // one mean loss per epoch
  EXPECT_GT(run.at("Loss")[0].get<double>(), 0);
  EXPECT_EQ(run.at("Metrics").at("labels")[0].at("finding"), "finding");
  EXPECT_EQ(run.at("Promotion").at("Promoted"), true);
  EXPECT_EQ(activated_, std::vector<int>{1});
  EXPECT_EQ(started.task->snapshot().content.at("ModelVersion"), 1);
  EXPECT_FALSE(std::filesystem::exists(archive_.dir().file("runs/run-" + std::to_string(started.runId))));
  EXPECT_EQ(training->runs().size(), 1u);
  EXPECT_TRUE(training->current().is_null());  // nothing runs now
}

TEST_F(TrainingServiceTest, NeverPromotesWhenToldSo) {
  auto training = service("never");
  const auto started = training->start(request(1));
  ASSERT_TRUE(started.task->waitFinished(kLongWait));
  EXPECT_EQ(training->run(started.runId)->at("Promotion").at("Promoted"), false);
  EXPECT_TRUE(activated_.empty());
  EXPECT_EQ(archive_.index().modelVersion(1)->status, "candidate");
}

TEST_F(TrainingServiceTest, ASecondRequestIsRefusedWithTheRunningRunAndACancelRegistersNothing) {
  auto training = service("always");
  const auto started = training->start(request(200));
  training->attachJob(started.runId, "job-7");
  try {
    training->start(request(1));
    FAIL() << "a second run started";
  } catch (const TrainingBusy& busy) {
    EXPECT_EQ(busy.runId(), started.runId);
    EXPECT_EQ(busy.jobId(), "job-7");
  }
  EXPECT_EQ(training->current().at("RunId"), started.runId);
  started.task->requestStop(BackgroundTask::StopReason::Canceled);
  ASSERT_TRUE(started.task->waitFinished(kLongWait));
  EXPECT_EQ(started.task->state(), BackgroundTask::State::Canceled);
  EXPECT_EQ(stateOf(started.runId), "canceled");
  EXPECT_TRUE(archive_.index().modelVersions().empty());
  EXPECT_TRUE(activated_.empty());
  EXPECT_FALSE(std::filesystem::exists(archive_.dir().file("models/v1")));
  EXPECT_EQ(training->runs().size(), 1u);  // the refused request left no run behind
}

TEST_F(TrainingServiceTest, ShutdownInterruptsTheRunAndARunLeftRunningIsMarkedInterruptedAtStart) {
  {
    auto training = service("always");
    const auto started = training->start(request(200));
    training->stop();
    EXPECT_EQ(stateOf(started.runId), "interrupted");
  }
  storage::TrainingRunRecord killed;  // what a process killed mid-run leaves
  killed.state = "running";
  const std::int64_t id = archive_.index().insertTrainingRun(killed);
  std::filesystem::create_directories(archive_.dir().file("runs/run-" + std::to_string(id)));
  auto training = service("always");
  EXPECT_EQ(training->interruptedAtStart(), std::vector<std::int64_t>{id});
  EXPECT_EQ(stateOf(id), "interrupted");
  EXPECT_NE(archive_.index().trainingRun(id)->error.find("nothing was registered"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(archive_.dir().file("runs/run-" + std::to_string(id))));
  EXPECT_TRUE(archive_.index().modelVersions().empty());
}

}  // namespace
}  // namespace comcl::plugin
