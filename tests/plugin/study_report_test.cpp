// Study results from index rows: aggregation, the report, headline metadata, the SR content, the fingerprint.
#include "study_report.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace comcl::plugin {
namespace {

ImageResults image(const std::string& id, const std::optional<std::string>& flag, const std::string& reasons,
                   std::vector<std::pair<std::string, double>> scores = {}, int version = 3) {
  ImageResults result;
  result.row.id = static_cast<std::int64_t>(std::hash<std::string>{}(id) % 100000);
  result.row.resourceId = id;
  result.row.sopInstanceUid = "1.2.3." + std::to_string(result.row.id);
  result.row.seriesInstanceUid = "1.2.3.9";
  result.row.sopClassUid = "1.2.840.10008.5.1.4.1.1.1";
  result.row.decodeState = storage::DecodeState::Decoded;
  storage::QualityRecord q;
  q.flag = flag;
  q.reasons = reasons;
  result.quality = q;
  for (const auto& [finding, score] : scores)
    result.predictions.push_back({result.row.id, version, finding, score});
  return result;
}

ImageResults skipped(const std::string& id, const std::string& reason) {
  ImageResults result;
  result.row.resourceId = id;
  result.row.sopInstanceUid = "1.2.3.77";
  result.row.sopClassUid = "1.2.840.10008.5.1.4.1.1.88.33";
  result.row.decodeState = storage::DecodeState::Skipped;
  result.row.decodeReason = reason;
  return result;
}

StudyInput studyWith(std::vector<ImageResults> images, std::optional<ActiveModel> model = std::nullopt) {
  StudyInput input;
  input.studyResourceId = "s1";
  input.studyTags = {{"StudyInstanceUID", "1.2.3"}, {"PatientID", "P1"}};
  input.images = std::move(images);
  input.model = std::move(model);
  return input;
}

ActiveModel model(int version = 3) {
  return {version, "v3 tiny-cnn", {"effusion", "nodule"}};
}

TEST(StudyReport, WithoutAModelTheReportSaysSoAndStillGivesQuality) {
  const StudyResults results =
      summariseStudy(studyWith({image("a", "good", ""), image("b", "usable", "noisy")}), "1.0");
  EXPECT_TRUE(results.report["Model"].is_null());
  EXPECT_NE(results.report["ModelMessage"].get<std::string>().find("no diagnosis model"), std::string::npos);
  EXPECT_EQ(results.qualityFlag, "usable");
  EXPECT_TRUE(results.scores.empty());
  const auto headline = headlineMetadata(results, std::nullopt);
  EXPECT_NE(std::find(headline.begin(), headline.end(),
                      std::make_pair(std::string("ComclModel"), std::string("none"))),
            headline.end());
}

TEST(StudyReport, TheStudyTakesTheWorstFlagAndTheReasonsInVocabularyOrder) {
  const StudyResults results = summariseStudy(
      studyWith({image("a", "usable", "low-resolution"), image("b", "reject", "blurred; noisy"),
                 image("c", "good", ""), skipped("d", "not an image: Basic Text SR")}),
      "1.0");
  EXPECT_EQ(results.qualityFlag, "reject");
  EXPECT_EQ(results.qualityReasons, (std::vector<std::string>{"blurred", "noisy", "low-resolution"}));
  EXPECT_EQ(results.report["Quality"]["Counts"]["reject"], 1);
  EXPECT_EQ(results.report["Quality"]["Counts"]["good"], 1);
  ASSERT_EQ(results.report["Images"].size(), 4u);
  EXPECT_EQ(results.report["Images"][3]["DecodeState"], "skipped");
  EXPECT_EQ(results.report["Images"][3]["DecodeReason"], "not an image: Basic Text SR");
}

TEST(StudyReport, AStudyWithoutDecodedImagesHasNoFlagButAReport) {
  const StudyResults results = summariseStudy(studyWith({skipped("d", "not an image: PDF")}), "1.0");
  EXPECT_FALSE(results.qualityFlag.has_value());
  EXPECT_TRUE(results.report["Quality"]["Flag"].is_null());
}

TEST(StudyReport, StudyScoresAreTheHighestAmongImagesThatAreNotRejected) {
  const StudyResults results =
      summariseStudy(studyWith({image("a", "good", "", {{"effusion", 0.2}, {"nodule", 0.7}}),
                                image("b", "usable", "noisy", {{"effusion", 0.6}, {"nodule", 0.1}}),
                                image("c", "reject", "blurred", {{"effusion", 0.99}, {"nodule", 0.99}})},
                               model()),
                     "1.0");
  ASSERT_EQ(results.scores.size(), 2u);
  EXPECT_EQ(results.scores[0], std::make_pair(std::string("effusion"), 0.6));
  EXPECT_EQ(results.scores[1], std::make_pair(std::string("nodule"), 0.7));
  EXPECT_FALSE(results.scoresFromRejectedImages);
  EXPECT_EQ(results.report["Model"]["Version"], 3);
}

TEST(StudyReport, WhenEveryImageIsRejectedTheScoresSaySo) {
  const StudyResults results = summariseStudy(
      studyWith({image("a", "reject", "blurred", {{"effusion", 0.4}, {"nodule", 0.3}})}, model()), "1.0");
  ASSERT_EQ(results.scores.size(), 2u);
  EXPECT_DOUBLE_EQ(results.scores[0].second, 0.4);
  EXPECT_TRUE(results.scoresFromRejectedImages);
  EXPECT_TRUE(results.report["ScoresFromRejectedImages"].get<bool>());
}

TEST(StudyReport, TheFingerprintFollowsEverythingTheResultsDependOnAndNothingElse) {
  const auto base = [] {
    return studyWith(
        {image("a", "good", "", {{"effusion", 0.2}}), image("b", "usable", "noisy", {{"effusion", 0.5}})},
        model());
  };
  const std::string reference = summariseStudy(base(), "1.0").fingerprint;
  EXPECT_EQ(summariseStudy(base(), "1.0").fingerprint, reference);

  StudyInput reordered = base();
  std::reverse(reordered.images.begin(), reordered.images.end());
  EXPECT_EQ(summariseStudy(reordered, "1.0").fingerprint, reference);

  StudyInput otherFlag = base();
  otherFlag.images[0].quality->flag = "reject";
  EXPECT_NE(summariseStudy(otherFlag, "1.0").fingerprint, reference);

  StudyInput otherModel = base();
  otherModel.model = model(4);
  EXPECT_NE(summariseStudy(otherModel, "1.0").fingerprint, reference);

  StudyInput otherScore = base();
  otherScore.images[1].predictions[0].score = 0.9;
  EXPECT_NE(summariseStudy(otherScore, "1.0").fingerprint, reference);

  StudyInput withReport = base();
  withReport.structuredReport = true;
  EXPECT_NE(summariseStudy(withReport, "1.0").fingerprint, reference);

  StudyInput extraImage = base();
  extraImage.images.push_back(image("c", "good", ""));
  EXPECT_NE(summariseStudy(extraImage, "1.0").fingerprint, reference);
}

TEST(StudyReport, HeadlineScoresAreSortedAndStayShort) {
  ActiveModel many{5, "v5", {}};
  std::vector<std::pair<std::string, double>> scores;
  for (int i = 0; i < 200; ++i) {
    many.findings.push_back("finding-with-a-long-name-" + std::to_string(i));
    scores.emplace_back(many.findings.back(), i / 200.0);
  }
  const StudyResults results = summariseStudy(studyWith({image("a", "good", "", scores, 5)}, many), "1.0");
  for (const auto& [name, value] : headlineMetadata(results, many)) {
    EXPECT_LT(value.size(), 1024u) << name;
    if (name == "ComclScores") {
      EXPECT_EQ(value.rfind("finding-with-a-long-name-199=0.995", 0), 0u) << value;
    }
    if (name == "ComclModel") {
      EXPECT_EQ(value, "5");
    }
  }
}

TEST(StudyReport, TheStructuredReportListsEveryReferencableImageWithItsResults) {
  const StudyInput input = studyWith({image("a", "usable", "noisy", {{"effusion", 0.25}, {"nodule", 0.5}}),
                                      skipped("d", "not an image: PDF")},
                                     model());
  const StudyResults results = summariseStudy(input, "1.0");
  const imaging::SrStudyReport sr = structuredReportOf(input, results, "1.0");
  EXPECT_EQ(sr.modelVersion, 3);
  EXPECT_EQ(sr.studyQualityFlag, "usable");
  ASSERT_EQ(sr.images.size(), 2u);
  EXPECT_EQ(sr.images[0].qualityFlag, "usable");
  EXPECT_EQ(sr.images[0].reasons, std::vector<std::string>{"noisy"});
  EXPECT_EQ(sr.images[0].scores.size(), 2u);
  EXPECT_EQ(sr.images[1].decodeState, "skipped");
  EXPECT_EQ(sr.images[1].reasons, std::vector<std::string>{"not an image: PDF"});
}

}  // namespace
}  // namespace comcl::plugin
