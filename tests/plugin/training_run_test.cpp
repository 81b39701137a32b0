// One retraining run without Orthanc: the request's validation, a tiny MedAug run that registers a
// candidate version the scorer loads with its held-out metrics, and a cancelled run that registers nothing.
#include "training_run.h"

#include <gtest/gtest.h>

#include "comcl/training/dataset.h"
#include "comcl/training/scorer.h"
#include "stored_split_archive.h"

namespace comcl::plugin {
namespace {

const LabelSet kLabels = {{"finding", 2}, {"grade", 4}};

TEST(TrainRequest, FieldsAreOptionalAndCheckedByName) {
  const TrainRequest defaults = TrainRequest::fromJson(nlohmann::json::object(), kLabels);
  EXPECT_EQ(defaults.method, "medaug");
  EXPECT_EQ(defaults.labels, (std::vector<std::string>{"finding", "grade"}));  // every declared label
  const TrainRequest comcl = TrainRequest::fromJson({{"Method", "comcl"}, {"Epochs", 3}}, kLabels);
  EXPECT_EQ(comcl.lesionLabel, "finding");
  EXPECT_EQ(comcl.epochs, 3);
  for (const nlohmann::json& bad :
       {nlohmann::json{{"Method", "simclr"}}, nlohmann::json{{"Epochs", 0}}, nlohmann::json{{"Epochs", "5"}},
        nlohmann::json{{"Labels", {"grade"}}}, nlohmann::json{{"Labels", {"unknown"}}},
        nlohmann::json{{"Strategy", "same-nothing"}}, nlohmann::json{{"Colour", true}},
        nlohmann::json{{"LesionSource", "detector"}}, nlohmann::json::array()})
    EXPECT_THROW(TrainRequest::fromJson(bad, kLabels), std::invalid_argument) << bad.dump();
  EXPECT_THROW(TrainRequest::fromJson(nlohmann::json::object(), LabelSet{{"grade", 4}}),
               std::invalid_argument);
}

class TrainingRunTest : public ::testing::Test {
 protected:
  void SetUp() override { comcl::testing::addPatientsWithStoredSplit(archive_); }
  TrainRequest tiny() const {
    TrainRequest r = TrainRequest::fromJson(
        {{"Method", "medaug"}, {"Epochs", 1}, {"ImageSize", 16}, {"BatchSize", 8}, {"Device", "cpu"}},
        kLabels);
    return r;
  }
  comcl::testing::ArchiveFixture archive_{32};
};

TEST_F(TrainingRunTest, ATinyRunRegistersACandidateVersionWithHeldOutMetrics) {
  std::vector<storage::LabelRecord> grades;  // a graded study label: evaluated with kappa, not scored
  for (int p = 0; p < 20; ++p) {
    for (int s = 0; s < 2; ++s)
      grades.push_back(
          {"study", "S" + std::to_string(p) + "." + std::to_string(s), "grade", double(p % 4), "t"});
  }
  archive_.index().putLabels(grades);
  std::vector<std::string> stages;
  storage::TrainingRunRecord run;
  run.state = "running";
  const std::int64_t runId = archive_.index().insertTrainingRun(run);
  const TrainOutcome outcome = runTraining(
      tiny(), archive_.index(), archive_.cache(), archive_.dir().file("models"), archive_.dir().file("run"),
      runId,
      [&](const TrainProgress& p) {
        if (stages.empty() || stages.back() != p.stage)
          stages.push_back(p.stage);
      },
      nullptr);
  EXPECT_EQ(stages, (std::vector<std::string>{"snapshot", "pre-train", "heads", "register"}));
  EXPECT_EQ(outcome.modelVersion, 1);
  const auto record = archive_.index().modelVersion(1);
  ASSERT_TRUE(record);
  EXPECT_EQ(record->status, "candidate");
  EXPECT_EQ(record->runId, runId);
  EXPECT_EQ(record->path, "v1");
  const auto scorer = training::loadScorer(outcome.modelDirectory);
  EXPECT_EQ(scorer->modelVersion(), 1);
  EXPECT_EQ(scorer->findings(), std::vector<std::string>{"finding"});
  EXPECT_TRUE(outcome.metrics.at("labels")[0].contains("auc")) << outcome.metrics.dump();
  EXPECT_EQ(outcome.metrics.at("labels")[0].at("testImages"), 16);  // P16..P19, 4 images each
  ASSERT_EQ(outcome.metrics.at("labels").size(), 2u);
  EXPECT_EQ(outcome.metrics.at("labels")[1].at("finding"), "grade");
  EXPECT_TRUE(outcome.metrics.at("labels")[1].at("kappa").is_object()) << outcome.metrics.dump();
  EXPECT_EQ(archive_.index().splitOf("P19"), "test");
}

// CoMCL through REST: boxes given with the labels (here on the frontal image of every positive training
// patient, and one on a held-out patient) are where its lesion patches are cut; "auto" finds them.
TEST_F(TrainingRunTest, AComclRunCutsItsLesionPatchesAroundTheStoredBoxes) {
  std::vector<storage::LesionBoxRecord> boxes;
  for (int p : {1, 3, 5, 7, 9, 11, 13, 17}) {
    for (const storage::InstanceRecord& row : archive_.index().instancesOfPatient("P" + std::to_string(p))) {
      if (row.viewPosition == "PA" && row.studyInstanceUid == "S" + std::to_string(p) + ".0")
        boxes.push_back({0, row.resourceId, "finding", 10, 10, 16, 16, 1, "rest:alice"});
    }
  }
  ASSERT_EQ(boxes.size(), 8u);
  archive_.index().putLesionBoxes(boxes);
  TrainRequest request = tiny();
  request.method = "comcl";
  request.lesionLabel = "finding";
  storage::TrainingRunRecord run;
  run.state = "running";
  const std::int64_t first = archive_.index().insertTrainingRun(run);
  const std::int64_t second = archive_.index().insertTrainingRun(run);
  std::vector<std::string> stages;
  const TrainOutcome outcome = runTraining(
      request, archive_.index(), archive_.cache(), archive_.dir().file("models"), archive_.dir().file("run"),
      first,
      [&](const TrainProgress& p) {
        if (stages.empty() || stages.back() != p.stage)
          stages.push_back(p.stage);
      },
      nullptr);
  EXPECT_EQ(stages, (std::vector<std::string>{"snapshot", "lesions", "pre-train", "heads", "register"}));
  EXPECT_EQ(outcome.lesions.at("Source"), "stored");
  EXPECT_EQ(outcome.lesions.at("LesionImages"), 28);  // 7 positive training patients x 2 studies x 2 views
  EXPECT_EQ(outcome.lesions.at("BoxesKept"), 7);
  EXPECT_EQ(outcome.lesions.at("BoxesDropped").at("held-out patient"), 1);
  EXPECT_EQ(outcome.lesions.at("LesionImagesWithoutBox"), 21);
  EXPECT_EQ(outcome.modelVersion, 1);

  request.lesionSource = "none";  // the same run with random windows says so
  const TrainOutcome random =
      runTraining(request, archive_.index(), archive_.cache(), archive_.dir().file("models"),
                  archive_.dir().file("run2"), second, {}, nullptr);
  EXPECT_EQ(random.lesions.at("Source"), "none");
  EXPECT_FALSE(random.lesions.contains("BoxesKept"));
}

TEST_F(TrainingRunTest, ACancelledRunRegistersNothing) {
  std::atomic<bool> cancel{false};
  EXPECT_THROW(runTraining(
                   tiny(), archive_.index(), archive_.cache(), archive_.dir().file("models"),
                   archive_.dir().file("run"), 1,
                   [&](const TrainProgress& p) { cancel = p.stage == "pre-train"; }, &cancel),
               training::DataError);
  EXPECT_TRUE(archive_.index().modelVersions().empty());
}

}  // namespace
}  // namespace comcl::plugin
