// The scoring service: the active model from the index, batched background scoring, on-demand scoring of
// what lacks predictions, and clear errors for a model that does not load.
#include "scoring.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <mutex>

#include "comcl/storage/cache_key.h"
#include "comcl/training/tensor_batch.h"
#include "temp_dir.h"

namespace comcl::plugin {
namespace {

constexpr int kSize = 32;

class ScoringServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    index_ = std::make_unique<storage::Index>((dir_.path() / "index.sqlite").string());
    cache_ = std::make_unique<storage::ImageCache>((dir_.path() / "cache.bin").string(),
                                                   storage::CacheFormat{kSize, 8});
  }

  // A decoded row whose cached image is a gradient scaled by `brightness`.
  storage::InstanceRecord addImage(const std::string& id, double brightness) {
    storage::InstanceRecord row;
    row.resourceId = id;
    row.decodeState = storage::DecodeState::Decoded;
    row.cacheSlot = index_->reserveCacheSlot();
    std::vector<std::uint8_t> pixels(kSize * kSize);
    for (std::size_t i = 0; i < pixels.size(); ++i)
      pixels[i] = static_cast<std::uint8_t>(brightness * static_cast<double>(i % 256));
    cache_->write(*row.cacheSlot, storage::cacheKey(id), pixels.data());
    row.id = index_->upsertInstance(row);
    return row;
  }

  // Writes a tiny model as version `version` and makes it the active one.
  void activateModel(int version) {
    training::ModelFile file;
    file.version = version;
    file.architecture = {{"name", "tiny-cnn"}, {"params", {{"width", 4}, {"depth", 2}}}};
    file.inputSize = kSize;
    file.findings = {"effusion", "nodule"};
    torch::manual_seed(version);
    auto network = training::buildNetwork(file.architecture, 1, 2);
    const std::string directory = "v" + std::to_string(version);
    training::writeModelDirectory((dir_.path() / "models" / directory).string(), file, *network);
    storage::ModelVersionRecord record;
    record.version = version;
    record.path = directory;  // relative to the model directory
    record.status = "active";
    index_->putModelVersion(record);
    index_->setValue(kActiveModelKey, std::to_string(version));
  }

  ScoringService& service() {
    if (!service_) {
      service_ = std::make_unique<ScoringService>(*index_, *cache_, (dir_.path() / "models").string(),
                                                  torch::kCPU, 4, [this](const std::string& line) {
                                                    std::lock_guard lock(logMutex_);
                                                    log_.push_back(line);
                                                  });
    }
    return *service_;
  }

  // What the model gives for one cached image, computed directly.
  std::vector<double> expectedScores(const storage::InstanceRecord& row) {
    auto scorer = training::loadScorer(
        (dir_.path() / "models" / ("v" + index_->value(kActiveModelKey).value())).string());
    const torch::Tensor images =
        training::loadBatch(*cache_, {{*row.cacheSlot, storage::cacheKey(row.resourceId)}});
    const torch::Tensor scores = scorer->score(images).to(torch::kDouble);
    return {scores[0][0].item<double>(), scores[0][1].item<double>()};
  }

  comcl::testing::TempDir dir_;
  std::unique_ptr<storage::Index> index_;
  std::unique_ptr<storage::ImageCache> cache_;
  std::unique_ptr<ScoringService> service_;
  std::mutex logMutex_;
  std::vector<std::string> log_;
};

TEST_F(ScoringServiceTest, WithoutAnActiveModelNothingIsScored) {
  const auto row = addImage("a", 1.0);
  EXPECT_FALSE(service().refresh());
  EXPECT_EQ(service().scoreMissing({row}), 0u);
  service().enqueue(row);
  service().drain();
  EXPECT_TRUE(index_->predictions(row.id).empty());
  EXPECT_EQ(service().lastError(), "");
}

TEST_F(ScoringServiceTest, BackgroundBatchesStoreTheModelsOwnScores) {
  activateModel(1);
  std::vector<storage::InstanceRecord> rows;
  for (int i = 0; i < 9; ++i)
    rows.push_back(addImage("img" + std::to_string(i), 0.1 + 0.1 * i));
  ASSERT_TRUE(service().refresh());
  for (const auto& row : rows)
    service().enqueue(row);
  service().drain();
  for (const auto& row : rows) {
    const auto predictions = index_->predictionsOfModel(row.id, 1);
    ASSERT_EQ(predictions.size(), 2u) << row.resourceId;
    const std::vector<double> expected = expectedScores(row);
    EXPECT_NEAR(predictions[0].score, expected[0], 1e-5);
    EXPECT_NEAR(predictions[1].score, expected[1], 1e-5);
  }
  const ScoringStats stats = service().stats();
  EXPECT_EQ(stats.imagesScored, 9);
  EXPECT_GE(stats.batches, 3);  // batch size 4
  EXPECT_GE(stats.pipelineSeconds, stats.forwardSeconds);
}

TEST_F(ScoringServiceTest, OnDemandScoringFillsOnlyWhatIsMissing) {
  activateModel(2);
  const auto a = addImage("a", 0.5);
  const auto b = addImage("b", 0.9);
  storage::InstanceRecord skipped;
  skipped.resourceId = "sr";
  skipped.decodeState = storage::DecodeState::Skipped;
  skipped.id = index_->upsertInstance(skipped);
  EXPECT_EQ(service().scoreMissing({a, skipped}), 1u);
  EXPECT_EQ(service().scoreMissing({a, b, skipped}), 1u);
  EXPECT_EQ(service().scoreMissing({a, b, skipped}), 0u);
  EXPECT_TRUE(index_->predictions(skipped.id).empty());
}

TEST_F(ScoringServiceTest, ChangingTheActiveVersionLoadsTheNewModel) {
  activateModel(1);
  ASSERT_EQ(service().refresh()->version, 1);
  activateModel(2);
  const auto active = service().refresh();
  ASSERT_TRUE(active);
  EXPECT_EQ(active->version, 2);
  EXPECT_EQ(active->findings, (std::vector<std::string>{"effusion", "nodule"}));
  index_->setValue(kActiveModelKey, "");
  EXPECT_FALSE(service().refresh());
}

TEST_F(ScoringServiceTest, AModelThatDoesNotLoadLeavesNoModelAndSaysWhy) {
  activateModel(1);
  std::filesystem::remove(dir_.path() / "models" / "v1" / "weights.pt");
  EXPECT_FALSE(service().refresh());
  EXPECT_NE(service().lastError().find("cannot load model version 1"), std::string::npos)
      << service().lastError();
  EXPECT_NE(service().lastError().find("weights.pt"), std::string::npos) << service().lastError();

  index_->setValue(kActiveModelKey, "7");  // not in the registry
  EXPECT_FALSE(service().refresh());
  EXPECT_NE(service().lastError().find("not in the registry"), std::string::npos) << service().lastError();
}

}  // namespace
}  // namespace comcl::plugin
