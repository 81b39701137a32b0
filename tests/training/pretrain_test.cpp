// Pre-training runs end to end on a tiny archive: deterministic, resumable after a cancel, refusing
// mismatched or corrupt checkpoints and data it cannot train on, and writing a loadable encoder.
#include "comcl/training/pretrain.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "archive_fixture.h"
#include "comcl/training/encoder_file.h"
#include "encoder_weights.h"

namespace comcl::training {
namespace {

namespace fs = std::filesystem;
using comcl::testing::ArchiveFixture;
const auto sameWeights = comcl::testing::sameEncoderWeights;

PretrainConfig tinyConfig(const std::string& method = "medaug") {
  PretrainConfig c = PretrainConfig::forMethod(method, 32);
  c.moco.queueSize = 8;
  c.moco.projectionDim = 16;
  c.epochs = 2;
  c.batchSize = 4;
  c.seed = 11;
  c.device = "cpu";
  c.loaderThreads = 2;
  c.optim.learningRate = 1e-3;
  return c;
}

class PretrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_.addPatients(3, 2);  // 12 images: 3 steps per epoch at batch 4
    set_ = TrainingSet::fromIndex(fixture_.index());
  }
  std::string runDir(const std::string& name) { return fixture_.dir().file(name); }
  ArchiveFixture fixture_;
  TrainingSet set_;
};

TEST_F(PretrainTest, RunsEveryEpochReportsProgressAndWritesALoadableEncoder) {
  std::vector<PretrainProgress> seen;
  Pretrainer trainer(set_, fixture_.cache(), tinyConfig(), runDir("run"));
  const PretrainResult result = trainer.run([&](const PretrainProgress& p) { seen.push_back(p); });
  ASSERT_TRUE(result.completed);
  EXPECT_FALSE(result.resumed);
  EXPECT_EQ(result.epochsDone, 2);
  EXPECT_EQ(result.stepsDone, 6);
  ASSERT_EQ(result.epochLosses.size(), 2u);
  ASSERT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen.back().globalStep, 6);
  EXPECT_EQ(seen.back().totalSteps, 6);
  EXPECT_EQ(seen.front().stepsPerEpoch, 3);
  EXPECT_GT(seen.back().imagesPerSecond, 0);
  EXPECT_GT(result.viewShare, 0);  // the augmentations took part of each step only
  EXPECT_LT(result.viewShare, 1);
  EXPECT_DOUBLE_EQ(seen.back().etaSeconds, 0);
  EncoderInfo info;
  auto backbone = loadEncoder(result.encoderDirectory, &info);
  EXPECT_EQ(info.architecture, "resnet18");
  EXPECT_EQ(info.imageSize, 32);
  EXPECT_EQ(info.details.at("dataSnapshot"), set_.snapshotId());
  EXPECT_EQ(info.details.at("pairs"), "same-patient/same-studies/all-lateralities");
  EXPECT_TRUE(fs::exists(fs::path(result.encoderDirectory) / "encoder.pth"));
  EXPECT_EQ(backbone->features(torch::rand({2, 1, 32, 32})).size(1), 512);
}

TEST_F(PretrainTest, AFixedSeedGivesTheSameWeightsOnTheCpu) {
  const auto a = Pretrainer(set_, fixture_.cache(), tinyConfig(), runDir("a")).run();
  const auto b = Pretrainer(set_, fixture_.cache(), tinyConfig(), runDir("b")).run();
  EXPECT_EQ(a.epochLosses, b.epochLosses);
  EXPECT_TRUE(sameWeights(a.encoderDirectory, b.encoderDirectory));
  PretrainConfig other = tinyConfig();
  other.seed = 12;
  const auto c = Pretrainer(set_, fixture_.cache(), other, runDir("c")).run();
  EXPECT_FALSE(sameWeights(a.encoderDirectory, c.encoderDirectory));
}

TEST_F(PretrainTest, ACancelledRunResumesToTheSameWeightsAsAnUninterruptedOne) {
  const auto straight = Pretrainer(set_, fixture_.cache(), tinyConfig(), runDir("straight")).run();
  std::atomic<bool> cancel{false};
  // Cancel after the 4th step (mid second epoch).
  const auto first = Pretrainer(set_, fixture_.cache(), tinyConfig(), runDir("resumed"))
                         .run([&](const PretrainProgress& p) { cancel = p.globalStep == 4; }, &cancel);
  EXPECT_TRUE(first.cancelled);
  EXPECT_FALSE(first.completed);
  EXPECT_EQ(first.stepsDone, 4);
  EXPECT_TRUE(fs::exists(runDir("resumed") + "/checkpoint.pt"));
  EXPECT_FALSE(fs::exists(runDir("resumed") + "/encoder"));
  std::int64_t firstStepAfterResume = 0;
  const auto second =
      Pretrainer(set_, fixture_.cache(), tinyConfig(), runDir("resumed")).run([&](const PretrainProgress& p) {
        if (!firstStepAfterResume)
          firstStepAfterResume = p.globalStep;
      });
  EXPECT_TRUE(second.resumed);
  EXPECT_TRUE(second.completed);
  EXPECT_EQ(firstStepAfterResume, 5);
  EXPECT_EQ(second.epochLosses, straight.epochLosses);
  EXPECT_TRUE(sameWeights(straight.encoderDirectory, second.encoderDirectory));
}

// The epoch monitor sees the query backbone in eval mode after each epoch; its values are kept in the
// checkpoint, so a resumed run reports every epoch's, and training continues in train mode.
TEST_F(PretrainTest, TheEpochMonitorRunsAfterEachEpochAndSurvivesAResume) {
  std::vector<int> epochsSeen;
  bool sawTrainingMode = false;
  const EpochMonitor monitor = [&](ResNet& backbone, int epoch) {
    sawTrainingMode = sawTrainingMode || backbone.is_training();
    epochsSeen.push_back(epoch);
    return 0.25 * epoch;
  };
  PretrainConfig config = tinyConfig();
  config.epochs = 3;
  std::atomic<bool> cancel{false};
  const auto first =
      Pretrainer(set_, fixture_.cache(), config, runDir("monitored"))
          .run([&](const PretrainProgress& p) { cancel = p.globalStep == 4; }, &cancel, monitor);
  EXPECT_TRUE(first.cancelled);
  EXPECT_EQ(epochsSeen, std::vector<int>{1});
  EXPECT_EQ(first.monitor, std::vector<double>{0.25});
  EXPECT_EQ(first.epochLosses.size(), 1u);
  const auto second =
      Pretrainer(set_, fixture_.cache(), config, runDir("monitored")).run({}, nullptr, monitor);
  ASSERT_TRUE(second.completed);
  EXPECT_EQ(epochsSeen, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(second.monitor, (std::vector<double>{0.25, 0.5, 0.75}));
  EXPECT_FALSE(sawTrainingMode);
}

TEST_F(PretrainTest, RefusesACheckpointOfAnotherConfigurationOrAnotherDataSnapshot) {
  std::atomic<bool> cancel{true};
  Pretrainer(set_, fixture_.cache(), tinyConfig(), runDir("run")).run({}, &cancel);
  PretrainConfig changed = tinyConfig();
  changed.moco.temperature = 0.07;
  try {
    Pretrainer(set_, fixture_.cache(), changed, runDir("run")).run();
    FAIL() << "a changed temperature was accepted";
  } catch (const TrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("temperature"), std::string::npos) << e.what();
  }
  fixture_.add({"P9", "S9", "PA", 1.0});
  const TrainingSet grown = TrainingSet::fromIndex(fixture_.index());
  try {
    Pretrainer(grown, fixture_.cache(), tinyConfig(), runDir("run")).run();
    FAIL() << "a changed data snapshot was accepted";
  } catch (const TrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("snapshot"), std::string::npos) << e.what();
  }
}

TEST_F(PretrainTest, ACorruptCheckpointIsReportedAndLeftAlone) {
  std::atomic<bool> cancel{false};
  Pretrainer(set_, fixture_.cache(), tinyConfig(), runDir("run"))
      .run([&](const PretrainProgress& p) { cancel = p.globalStep == 2; }, &cancel);
  const std::string checkpoint = runDir("run") + "/checkpoint.pt";
  fs::resize_file(checkpoint, fs::file_size(checkpoint) / 2);
  const auto size = fs::file_size(checkpoint);
  try {
    Pretrainer(set_, fixture_.cache(), tinyConfig(), runDir("run")).run();
    FAIL() << "a truncated checkpoint was accepted";
  } catch (const TrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("checkpoint"), std::string::npos) << e.what();
  }
  EXPECT_EQ(fs::file_size(checkpoint), size);
}

TEST_F(PretrainTest, RefusesDataItCannotTrainOn) {
  ArchiveFixture empty;
  const TrainingSet none = TrainingSet::fromIndex(empty.index());
  EXPECT_THROW(Pretrainer(none, empty.cache(), tinyConfig(), runDir("e")), DataError);
  PretrainConfig big = tinyConfig();
  big.batchSize = 64;
  try {
    Pretrainer(set_, fixture_.cache(), big, runDir("b"));
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("batch size 64"), std::string::npos) << e.what();
  }
  PretrainConfig wrongPairs = tinyConfig("moco");
  wrongPairs.pairs = PairStrategy::parse("same-patient/all-studies");
  EXPECT_THROW(Pretrainer(set_, fixture_.cache(), wrongPairs, runDir("w")), std::invalid_argument);
  PretrainConfig half = tinyConfig();
  half.precision = "fp16";
  EXPECT_THROW(Pretrainer(set_, fixture_.cache(), half, runDir("h")).run(), TrainingError);
}

TEST_F(PretrainTest, InstancePairsTrainAsPlainMoco) {
  const auto result = Pretrainer(set_, fixture_.cache(), tinyConfig("moco"), runDir("moco")).run();
  EXPECT_TRUE(result.completed);
  EXPECT_EQ(readEncoderInfo(result.encoderDirectory).details.at("pairs"), "instance");
}

TEST_F(PretrainTest, ConfigRoundTripsThroughJson) {
  const PretrainConfig c = tinyConfig();
  EXPECT_EQ(PretrainConfig::fromJson(c.toJson()).toJson(), c.toJson());
  auto bad = c.toJson();
  bad["epoch"] = 3;
  EXPECT_THROW(PretrainConfig::fromJson(bad), std::invalid_argument);
}

}  // namespace
}  // namespace comcl::training
