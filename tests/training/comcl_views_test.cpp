// CoMCL's views and its pre-training run: roles are checked with messages that say what to do, an epoch
// uses every lesion image once, lesion patches contain their box, V2 is V1's window on the degraded copy,
// real low-quality healthy images feed V4, and `pretrain --method comcl` runs, repeats for a seed, resumes
// after a cancel to the same weights and refuses other lesion boxes on resume.
#include "comcl/training/comcl_views.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "archive_fixture.h"
#include "comcl/training/encoder_file.h"
#include "comcl/training/pretrain.h"
#include "encoder_weights.h"

namespace comcl::training {
namespace {

namespace fs = std::filesystem;
using comcl::testing::ArchiveFixture;
const auto sameWeights = comcl::testing::sameEncoderWeights;

// Lesion images: label 1; healthy: label 0; every lesion image gets one box round the middle.
ComclRoles rolesFromLabels(const TrainingSet& set, PatchBox box = {0.4f, 0.4f, 0.6f, 0.6f}) {
  ComclRoles roles;
  roles.boxes.resize(set.size());
  for (std::size_t i = 0; i < set.size(); ++i) {
    const auto label = set.label(i, "finding");
    if (!label)
      continue;
    if (*label > 0) {
      roles.lesionImages.push_back(static_cast<int>(i));
      roles.boxes[i].push_back(box);
    } else {
      roles.healthyImages.push_back(static_cast<int>(i));
    }
  }
  return roles;
}

std::string dataErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  }
  return "(no DataError)";
}

class ComclViewsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_.addPatients(4, 2);  // 16 images: 8 lesion (odd patients), 8 healthy
    set_ = TrainingSet::fromIndex(fixture_.index());
  }
  ArchiveFixture fixture_;
  TrainingSet set_;
};

TEST_F(ComclViewsTest, RolesThatCannotTrainAreRefusedWithWhatToDo) {
  ComclRoles roles = rolesFromLabels(set_);
  ComclRoles noLesion = roles;
  noLesion.lesionImages.clear();
  EXPECT_NE(dataErrorOf([&] { noLesion.validate(set_.size()); }).find("--method medaug"), std::string::npos);
  ComclRoles noHealthy = roles;
  noHealthy.healthyImages.clear();
  EXPECT_NE(dataErrorOf([&] { noHealthy.validate(set_.size()); }).find("healthy images"), std::string::npos);
  ComclRoles outside = roles;
  outside.boxes[static_cast<std::size_t>(roles.lesionImages[0])] = {{0.8f, 0.8f, 1.2f, 0.9f}};
  EXPECT_NE(dataErrorOf([&] { outside.validate(set_.size()); }).find("outside the image"), std::string::npos);
  ComclRoles twice = roles;
  twice.healthyImages.push_back(roles.lesionImages[0]);
  EXPECT_NE(dataErrorOf([&] { twice.validate(set_.size()); }).find("listed twice"), std::string::npos);
  EXPECT_NE(
      dataErrorOf([&] { ComclPlanner(set_, roles, ComclViewConfig{}, 9); }).find("at least as many lesion"),
      std::string::npos);
  EXPECT_NO_THROW(roles.validate(set_.size()));
}

TEST_F(ComclViewsTest, RolesRoundTripThroughJsonAndMalformedOnesAreRefused) {
  ComclRoles roles = rolesFromLabels(set_);
  roles.boxes[static_cast<std::size_t>(roles.lesionImages[1])].push_back({0.1f, 0.2f, 0.3f, 0.4f});
  const ComclRoles back = ComclRoles::fromJson(roles.toJson(), set_.size());
  EXPECT_EQ(back.lesionImages, roles.lesionImages);
  EXPECT_EQ(back.healthyImages, roles.healthyImages);
  ASSERT_EQ(back.boxes.size(), roles.boxes.size());
  EXPECT_EQ(back.boxes[static_cast<std::size_t>(roles.lesionImages[1])].size(), 2u);
  EXPECT_FLOAT_EQ(back.boxes[static_cast<std::size_t>(roles.lesionImages[1])][1].y1, 0.4f);
  EXPECT_NE(dataErrorOf([&] { ComclRoles::fromJson(roles.toJson(), 3); }).find("the set has 3"),
            std::string::npos);
  EXPECT_NE(
      dataErrorOf([&] { ComclRoles::fromJson(nlohmann::json::object(), set_.size()); }).find("malformed"),
      std::string::npos);
}

TEST_F(ComclViewsTest, AnEpochUsesEveryLesionImageOnceAndDrawsHealthyImagesFromTheirRoles) {
  const ComclRoles roles = rolesFromLabels(set_);
  ComclViewConfig config;
  config.healthyPerLesion = 2;
  const ComclPlanner planner(set_, roles, config, 4);
  EXPECT_EQ(planner.stepsPerEpoch(), 2);
  std::mt19937_64 rng(3);
  const auto steps = planner.planEpoch(rng);
  ASSERT_EQ(steps.size(), 2u);
  std::multiset<int> lesion;
  const std::set<int> healthy(roles.healthyImages.begin(), roles.healthyImages.end());
  for (const auto& step : steps) {
    lesion.insert(step.lesion.begin(), step.lesion.end());
    EXPECT_EQ(step.healthy.size(), 8u);
    for (int h : step.healthy)
      EXPECT_TRUE(healthy.count(h));
    for (int h : step.lowQuality)
      EXPECT_TRUE(healthy.count(h));
    // No image of the set is flagged low quality: every V4 is synthetic.
    EXPECT_TRUE(
        std::none_of(step.lowQualityIsReal.begin(), step.lowQualityIsReal.end(), [](bool b) { return b; }));
    for (int box : step.lesionBox)
      EXPECT_EQ(box, 0);
  }
  EXPECT_EQ(lesion, std::multiset<int>(roles.lesionImages.begin(), roles.lesionImages.end()));
  std::mt19937_64 same(3);
  EXPECT_EQ(planner.planEpoch(same)[1].healthy, steps[1].healthy);
}

TEST_F(ComclViewsTest, RealLowQualityHealthyImagesFeedV4) {
  const ComclRoles before = rolesFromLabels(set_);
  // Flag two healthy images "reject" in the index and reload.
  for (int i : {before.healthyImages[0], before.healthyImages[1]}) {
    storage::QualityRecord quality;
    quality.instanceId = set_.images()[static_cast<std::size_t>(i)].instanceId;
    quality.flag = "reject";
    fixture_.index().putQuality(quality);
  }
  const TrainingSet flagged = TrainingSet::fromIndex(fixture_.index());
  const ComclRoles roles = rolesFromLabels(flagged);
  ComclViewConfig config;
  config.realLowQualityShare = 1.0;
  const ComclPlanner planner(flagged, roles, config, 4);
  EXPECT_EQ(planner.healthyLowQuality(), 2);
  EXPECT_EQ(planner.healthyHighQuality(), 6);
  std::mt19937_64 rng(5);
  for (const auto& step : planner.planEpoch(rng)) {
    for (std::size_t i = 0; i < step.lowQuality.size(); ++i) {
      EXPECT_TRUE(step.lowQualityIsReal[i]);
      EXPECT_TRUE(isLowQuality(flagged.images()[static_cast<std::size_t>(step.lowQuality[i])]));
      EXPECT_FALSE(isLowQuality(flagged.images()[static_cast<std::size_t>(step.healthy[i])]));
    }
  }
}

// A black image with a white box: without augmentation the lesion patches hold the whole box, V2 is V1 on
// the degraded copy (identical at severity 0), and healthy patches are windows of the healthy image.
TEST(ComclViewMakerTest, LesionPatchesContainTheirBoxAndV2IsV1sWindowOnTheDegradedCopy) {
  const int size = 64;
  torch::Tensor lesion = torch::zeros({3, 1, size, size});
  lesion.index_put_(
      {torch::indexing::Slice(), 0, torch::indexing::Slice(40, 44), torch::indexing::Slice(8, 12)}, 1.0);
  const torch::Tensor boxes = torch::tensor({8.f, 40.f, 12.f, 44.f}).div(size).repeat({3, 1});
  ComclStepImages images{lesion, boxes, torch::full({2, 1, size, size}, 0.5),
                         torch::full({2, 1, size, size}, 0.5), torch::zeros({2}, torch::kBool)};
  AugmentConfig still = noAugment(16);
  ComclViewConfig config;  // window 16 of 64
  config.degradation.severityMin = config.degradation.severityMax = 0;
  const ComclViewMaker clean(config, still);
  std::mt19937_64 rng(9);
  const ComclViews views = clean(images, rng);
  ASSERT_EQ(views.lesion.sizes(), (std::vector<std::int64_t>{3, 1, 16, 16}));
  for (std::int64_t i = 0; i < 3; ++i) {
    // 16 white pixels, resampled at a sub-pixel shift: the mass stays inside the window.
    EXPECT_NEAR(views.lesion[i].sum().item<double>(), 16.0, 0.5) << i;
    EXPECT_NEAR(views.lesionSecond[i].sum().item<double>(), 16.0, 0.5) << i;
  }
  EXPECT_TRUE(torch::equal(views.lowQualityLesion, views.lesion));
  EXPECT_TRUE(torch::equal(views.lowQualityImage, views.image));
  EXPECT_FALSE(torch::equal(views.lesion, views.lesionSecond));  // independent shifts
  EXPECT_TRUE(torch::allclose(views.healthy, torch::full({2, 1, 16, 16}, 0.5)));

  ComclViewConfig degrading;
  degrading.degradation.kinds = {DegradationKind::Noise};
  degrading.degradation.minKinds = degrading.degradation.maxKinds = 1;
  degrading.degradation.severityMin = degrading.degradation.severityMax = 1;
  std::mt19937_64 rng2(9);
  const ComclViews noisy = ComclViewMaker(degrading, still)(images, rng2);
  EXPECT_TRUE(torch::equal(noisy.lesion, views.lesion));  // the degradation draws come after V1's
  EXPECT_GT((noisy.lowQualityLesion - noisy.lesion).abs().max().item<double>(), 0.01);
  EXPECT_GT((noisy.lowQualityHealthy - 0.5).abs().max().item<double>(), 0.01);  // synthetic V4
  ASSERT_EQ(noisy.lesionDegradation.size(), 3u);
  EXPECT_EQ(noisy.lesionDegradation[0].steps.at(0).kind, DegradationKind::Noise);

  std::mt19937_64 rng3(9);
  const ComclViews again = ComclViewMaker(degrading, still)(images, rng3);
  EXPECT_TRUE(torch::equal(again.lowQualityLesion, noisy.lowQualityLesion));
}

TEST(ComclViewMakerTest, RealLowQualityV4IsLeftUndegraded) {
  const int size = 32;
  ComclStepImages images{torch::rand({2, 1, size, size}), torch::full({2, 4}, -1.0f),
                         torch::full({2, 1, size, size}, 0.5), torch::full({2, 1, size, size}, 0.25),
                         torch::tensor({1, 0}, torch::kUInt8).to(torch::kBool)};
  ComclViewConfig config;
  config.patchFraction = 0.5;
  config.degradation.kinds = {DegradationKind::Noise};
  config.degradation.minKinds = config.degradation.maxKinds = 1;
  config.degradation.severityMin = config.degradation.severityMax = 1;
  std::mt19937_64 rng(1);
  const ComclViews views = ComclViewMaker(config, noAugment(16))(images, rng);
  EXPECT_TRUE(torch::allclose(views.lowQualityHealthy[0], torch::full({1, 16, 16}, 0.25)));
  EXPECT_GT((views.lowQualityHealthy[1] - 0.25).abs().max().item<double>(), 0.01);
  EXPECT_TRUE(views.healthyDegradation[0].steps.empty());
  EXPECT_FALSE(views.healthyDegradation[1].steps.empty());
}

TEST_F(ComclViewsTest, TheContactSheetShowsEveryViewOfSomeLesionSamplesWithTheirBoxes) {
  const ComclRoles roles = rolesFromLabels(set_);
  const ComclContactSheet sheet =
      makeComclContactSheet(set_, fixture_.cache(), roles, ComclViewConfig{}, comclAugment(16), 3, 7, 2);
  ASSERT_EQ(sheet.pixels.sizes(), (std::vector<std::int64_t>{3 * 18 - 2, 8 * 18 - 2, 1}));
  ASSERT_EQ(sheet.rows.size(), 3u);
  EXPECT_EQ(ComclContactSheet::columns().size(), 8u);
  for (const auto& row : sheet.rows) {
    EXPECT_TRUE(row.at("box").is_array());
    EXPECT_FALSE(row.at("lowQualityIsReal").get<bool>());
    EXPECT_TRUE(row.contains("lowQualityDegradation"));
    EXPECT_FALSE(row.at("lesionDegradation").at("steps").empty());
  }
  // The box (0.4..0.6 of a 16 px tile: pixels 6..9) is outlined in white on the first tile.
  using torch::indexing::Slice;
  EXPECT_TRUE(torch::all(sheet.pixels.index({Slice(6, 10), 6, 0}) == 1.0).item<bool>());
  EXPECT_TRUE(torch::equal(sheet.pixels.index({Slice(0, 16), 16, 0}), torch::full({16}, 0.5)));  // the gap
  EXPECT_TRUE(torch::equal(
      makeComclContactSheet(set_, fixture_.cache(), roles, ComclViewConfig{}, comclAugment(16), 3, 7, 2)
          .pixels,
      sheet.pixels));
}

// --- pretrain --method comcl

PretrainConfig tinyComcl() {
  PretrainConfig c = PretrainConfig::forMethod("comcl", 16);
  c.moco.queueSize = 16;
  c.moco.projectionDim = 16;
  c.comcl.imageQueueSize = 8;
  c.epochs = 2;
  c.batchSize = 2;
  c.seed = 4;
  c.device = "cpu";
  c.loaderThreads = 2;
  c.optim.learningRate = 1e-3;
  return c;
}

TEST_F(ComclViewsTest, PretrainingRunsRepeatsForASeedAndResumesAfterACancel) {
  const ComclRoles roles = rolesFromLabels(set_);
  const std::string dir = fixture_.dir().file("runs");
  const auto straight = Pretrainer(set_, fixture_.cache(), tinyComcl(), dir + "/a", roles).run();
  ASSERT_TRUE(straight.completed);
  EXPECT_EQ(straight.stepsDone, 8);  // 8 lesion images / batch 2, 2 epochs
  ASSERT_EQ(straight.epochLosses.size(), 2u);
  for (double loss : straight.epochLosses)
    EXPECT_TRUE(std::isfinite(loss) && loss > 0) << loss;
  EXPECT_GT(straight.viewShare, 0);  // views were made, and took part of each step only
  EXPECT_LT(straight.viewShare, 1);
  EncoderInfo info;
  loadEncoder(straight.encoderDirectory, &info);
  EXPECT_EQ(info.details.at("method"), "comcl");
  EXPECT_EQ(info.details.at("lesionImages"), 8);
  EXPECT_EQ(info.imageSize, 16);

  const auto again = Pretrainer(set_, fixture_.cache(), tinyComcl(), dir + "/b", roles).run();
  EXPECT_EQ(again.epochLosses, straight.epochLosses);
  EXPECT_TRUE(sameWeights(straight.encoderDirectory, again.encoderDirectory));

  std::atomic<bool> cancel{false};
  const auto first = Pretrainer(set_, fixture_.cache(), tinyComcl(), dir + "/c", roles)
                         .run([&](const PretrainProgress& p) { cancel = p.globalStep == 5; }, &cancel);
  EXPECT_TRUE(first.cancelled);
  // Other boxes are another run: refused, the checkpoint left alone.
  const ComclRoles moved = rolesFromLabels(set_, {0.1f, 0.1f, 0.3f, 0.3f});
  try {
    Pretrainer(set_, fixture_.cache(), tinyComcl(), dir + "/c", moved).run();
    ADD_FAILURE() << "other lesion boxes were accepted on resume";
  } catch (const TrainingError& e) {
    EXPECT_NE(std::string(e.what()).find("lesionRoles"), std::string::npos) << e.what();
  }
  const auto second = Pretrainer(set_, fixture_.cache(), tinyComcl(), dir + "/c", roles).run();
  EXPECT_TRUE(second.resumed);
  EXPECT_EQ(second.epochLosses, straight.epochLosses);
  EXPECT_TRUE(sameWeights(straight.encoderDirectory, second.encoderDirectory));
}

TEST_F(ComclViewsTest, AblationsTrainWithATermSwitchedOffAndChangeTheLoss) {
  const ComclRoles roles = rolesFromLabels(set_);
  const std::string dir = fixture_.dir().file("ablations");
  const auto full = Pretrainer(set_, fixture_.cache(), tinyComcl(), dir + "/full", roles).run();
  PretrainConfig noImage = tinyComcl();
  noImage.comcl.loss.imageTerm = false;
  const auto withoutImage = Pretrainer(set_, fixture_.cache(), noImage, dir + "/no-image", roles).run();
  ASSERT_TRUE(withoutImage.completed);
  EXPECT_NE(withoutImage.epochLosses, full.epochLosses);
  PretrainConfig noMining = tinyComcl();
  noMining.comcl.loss.beta = 0;
  const auto withoutMining = Pretrainer(set_, fixture_.cache(), noMining, dir + "/no-spl", roles).run();
  ASSERT_TRUE(withoutMining.completed);
  EXPECT_NE(withoutMining.epochLosses, full.epochLosses);
}

TEST_F(ComclViewsTest, PretrainerRefusesComclWithoutLesionImages) {
  const std::string message = dataErrorOf(
      [&] { Pretrainer(set_, fixture_.cache(), tinyComcl(), fixture_.dir().file("none"), ComclRoles{}); });
  EXPECT_NE(message.find("--method medaug"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(fixture_.dir().file("none")));
}

// Fundus photographs: a colour archive trains a 3-channel backbone with the fundus degradations (each
// lesion copy gets one of degrade_eyeq's codes), and the contact sheet keeps the colour.
TEST(ComclColourTest, AColourArchiveTrainsAThreeChannelEncoderWithFundusDegradations) {
  ArchiveFixture colour(32, 3);
  colour.addPatients(4, 2);
  const TrainingSet set = TrainingSet::fromIndex(colour.index());
  const ComclRoles roles = rolesFromLabels(set);
  PretrainConfig config = tinyComcl();
  config.moco.channels = 3;
  config.comcl.views.degradation = fundusDegradation();
  config.epochs = 1;

  ComclPlanner planner(set, roles, config.comcl.views, config.batchSize);
  std::mt19937_64 rng(3);
  const ComclStepImages images =
      loadComclStep(set, colour.cache(), roles, planner.planEpoch(rng).front(), false, config.moco.channels);
  ASSERT_EQ(images.lesionImages.size(1), 3);
  const ComclViews views = ComclViewMaker(config.comcl.views, config.augment)(images, rng);
  ASSERT_EQ(views.lowQualityLesion.sizes(), (std::vector<std::int64_t>{2, 3, 16, 16}));
  for (const DegradeParams& p : views.lesionDegradation)
    EXPECT_EQ(p.fundusCode.size(), 3u) << p.toJson().dump();
  // The colour survives the views: red stays above blue inside the field of view.
  EXPECT_GT(views.lesion.select(1, 0).mean().item<double>(), views.lesion.select(1, 2).mean().item<double>());

  const auto result = Pretrainer(set, colour.cache(), config, colour.dir().file("colour-run"), roles).run();
  ASSERT_TRUE(result.completed);
  EncoderInfo info;
  loadEncoder(result.encoderDirectory, &info);
  EXPECT_EQ(info.channels, 3);
  EXPECT_EQ(info.details.at("config").at("comcl").at("views").at("degradation").at("fundusCodes").size(), 7u);

  const ComclContactSheet sheet =
      makeComclContactSheet(set, colour.cache(), roles, config.comcl.views, config.augment, 2, 5, 2);
  EXPECT_EQ(sheet.pixels.size(2), 3);
}

TEST(ComclConfigTest, RoundTripsThroughJsonAndRefusesATemperatureMismatch) {
  PretrainConfig c = tinyComcl();
  c.comcl.loss.qualityWeight = 0.5;
  c.comcl.views.patchFraction = 0.3;
  const PretrainConfig back = PretrainConfig::fromJson(c.toJson());
  EXPECT_EQ(back.toJson(), c.toJson());
  c.moco.temperature = 0.2;
  EXPECT_THROW(c.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace comcl::training
