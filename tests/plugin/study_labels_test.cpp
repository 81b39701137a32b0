// Study labels through REST: checked against the declared label set, stored on the study by
// StudyInstanceUID, bulk rows resolved by UID or by patient and date and reported row by row.
#include "study_labels.h"

#include <gtest/gtest.h>

#include <set>

#include "plugin_config.h"
#include "temp_dir.h"

namespace comcl::plugin {
namespace {

class StudyLabelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    addInstance("i1", "P1", "1.2.1", "20200101");
    addInstance("i2", "P1", "1.2.2", "20200301");
    addInstance("i3", "P2", "1.2.3", "20200101");
    addInstance("i4", "P2", "1.2.4", "20200101");  // a second study of P2 that day
    addInstance("i5", "P3", "1.2.5", "20200101", "ACC5");
    addInstance("i6", "P3", "1.2.6", "20200102", "ACC-TWICE");
    addInstance("i7", "P4", "1.2.7", "20200102", "ACC-TWICE");  // a clash across patients
  }
  void addInstance(const std::string& id, const std::string& patient, const std::string& study,
                   const std::string& date, const std::string& accession = "") {
    storage::InstanceRecord row;
    row.accessionNumber = accession;
    row.sopInstanceUid = "sop-" + id;
    row.rows = 200;
    row.cols = 100;
    row.resourceId = id;
    row.patientKey = patient;
    row.studyInstanceUid = study;
    row.studyDate = date;
    row.decodeState = storage::DecodeState::Decoded;
    index_.upsertInstance(row);
  }

  comcl::testing::TempDir dir_;
  storage::Index index_{(dir_.path() / "index.sqlite").string()};
  StudyLabels labels_{index_, labelSetFromJson({{"covid", "binary"}, {"severity", 4}})};
};

TEST_F(StudyLabelsTest, StoresTheValidLabelsOfAStudyAndReportsTheOthers) {
  const nlohmann::json result =
      labels_.put("1.2.1", {{"covid", 1}, {"edema", 1}, {"severity", 4}}, "rest:alice");
  EXPECT_EQ(result.at("Stored"), 1);
  ASSERT_EQ(result.at("Problems").size(), 2u) << result.dump();
  EXPECT_NE(result.at("Problems")[0].get<std::string>().find("unknown label 'edema'"), std::string::npos);
  EXPECT_NE(result.at("Problems")[1].get<std::string>().find("from 0 to 3"), std::string::npos);
  const nlohmann::json stored = labels_.get("1.2.1");
  EXPECT_EQ(stored.at("Labels").at("covid"), (nlohmann::json{{"Value", 1.0}, {"Source", "rest:alice"}}));
  EXPECT_FALSE(stored.at("Labels").contains("severity"));
  EXPECT_EQ(labels_.put("1.2.1", {{"covid", 0.5}}, "x").at("Stored"), 0);
  EXPECT_EQ(labels_.put("1.2.1", nlohmann::json::array(), "x").at("Problems").size(), 1u);
  EXPECT_EQ(index_.labels("study", "1.2.1").at(0).value, 1.0);  // the refused values changed nothing
}

TEST_F(StudyLabelsTest, BulkRowsAreResolvedAndReportedOneByOne) {
  const nlohmann::json rows = nlohmann::json::parse(R"([
    {"StudyInstanceUID": "1.2.2", "Labels": {"covid": 0, "severity": 2}},
    {"PatientID": "P1", "StudyDate": "20200101", "Labels": {"covid": 1}},
    {"StudyInstanceUID": "9.9.9", "Labels": {"covid": 1}},
    {"PatientID": "P2", "StudyDate": "20200101", "Labels": {"covid": 1}},
    {"PatientID": "P1", "Labels": {"covid": 1}},
    "not a row",
    {"StudyInstanceUID": "1.2.3", "Labels": {"covid": 2, "severity": 1}}
  ])");
  const nlohmann::json result = labels_.importRows(rows, "rest");
  EXPECT_EQ(result.at("Rows"), 7);
  EXPECT_EQ(result.at("Stored"), 4);  // rows 1 (two labels), 2 and 7 (severity)
  std::vector<int> reported;
  for (const auto& problem : result.at("Problems"))
    reported.push_back(problem.at("Row").get<int>());
  EXPECT_EQ(reported, (std::vector<int>{3, 4, 5, 6, 7}));
  EXPECT_NE(result.at("Problems")[1].at("Message").get<std::string>().find("2 studies"), std::string::npos);
  EXPECT_EQ(labels_.get("1.2.1").at("Labels").at("covid").at("Value"), 1.0);
  EXPECT_EQ(labels_.get("1.2.3").at("Labels").at("severity").at("Value"), 1.0);
  EXPECT_THROW(labels_.importRows(nlohmann::json::object(), "rest"), std::invalid_argument);
}

TEST_F(StudyLabelsTest, RowsMayNameTheirStudyByAccessionNumber) {
  const nlohmann::json result = labels_.importRows(nlohmann::json::parse(R"([
    {"AccessionNumber": "ACC5", "Labels": {"covid": 1}},
    {"AccessionNumber": "ACC-TWICE", "Labels": {"covid": 1}},
    {"AccessionNumber": "NOPE", "Labels": {"covid": 1}}])"),
                                                   "bulk");
  EXPECT_EQ(result.at("Stored"), 1);
  ASSERT_EQ(result.at("Problems").size(), 2u) << result.dump();
  EXPECT_NE(result.at("Problems")[0].at("Message").get<std::string>().find("names 2 studies"),
            std::string::npos);
  EXPECT_EQ(result.at("Problems")[1].at("Row"), 3);
  EXPECT_EQ(labels_.get("1.2.5").at("Labels").at("covid").at("Value"), 1.0);
}

TEST_F(StudyLabelsTest, CsvRowsAreImportedLikeJsonRowsAndReportedByDataRow) {
  const std::string csv =
      "StudyInstanceUID,AccessionNumber,PatientID,StudyDate,covid,severity\r\n"
      "1.2.1,,,,1,3\r\n"
      ",ACC5,,,0,\r\n"                 // an empty cell gives no label
      ",,P1,20200301,yes,1\r\n"        // a value that is not a number is reported, the other label kept
      ",,P9,20200101,1,1\r\n"          // unknown study
      "1.2.3,,,,1\r\n"                 // ragged
      "\"1.2.4\",,,,\"0\",\"2\"\r\n";  // quoted cells
  const nlohmann::json result = labels_.importCsv(csv, "csv:alice");
  EXPECT_EQ(result.at("Rows"), 6);
  EXPECT_EQ(result.at("Stored"), 6);  // 2 + 1 + 1 + 0 + 0 + 2
  std::set<int> problemRows;
  for (const nlohmann::json& problem : result.at("Problems"))
    problemRows.insert(problem.at("Row").get<int>());
  EXPECT_EQ(problemRows, (std::set<int>{3, 4, 5})) << result.dump(2);
  EXPECT_EQ(labels_.get("1.2.1").at("Labels").at("severity").at("Value"), 3.0);
  EXPECT_EQ(labels_.get("1.2.1").at("Labels").at("covid").at("Source"), "csv:alice");
  EXPECT_EQ(labels_.get("1.2.5").at("Labels").size(), 1u);
  EXPECT_EQ(labels_.get("1.2.2").at("Labels").at("severity").at("Value"), 1.0);
  EXPECT_FALSE(labels_.get("1.2.2").at("Labels").contains("covid"));
  EXPECT_EQ(labels_.get("1.2.4").at("Labels").at("severity").at("Value"), 2.0);
  EXPECT_THROW(labels_.importCsv("covid,severity\n1,2\n", "x"), std::invalid_argument);
}

TEST_F(StudyLabelsTest, LesionBoxesAreCheckedAgainstTheirImageAndReadBack) {
  const nlohmann::json result = labels_.putBoxes("1.2.1", nlohmann::json::parse(R"([
    {"SOPInstanceUID": "sop-i1", "Finding": "covid", "Box": [10, 20, 40, 60]},
    {"SOPInstanceUID": "sop-i1", "Finding": "covid", "Box": [50, 150, 100, 200], "Confidence": 0.7},
    {"SOPInstanceUID": "sop-i2", "Finding": "covid", "Box": [1, 1, 2, 2]},
    {"SOPInstanceUID": "sop-i1", "Finding": "severity", "Box": [1, 1, 2, 2]},
    {"SOPInstanceUID": "sop-i1", "Finding": "covid", "Box": [10, 20, 140, 60]},
    {"SOPInstanceUID": "sop-i1", "Finding": "covid", "Box": [40, 20, 10, 60]},
    {"SOPInstanceUID": "sop-i1", "Finding": "covid", "Box": [1, 2, 3]},
    {"SOPInstanceUID": "sop-i1", "Finding": "covid"}])"),
                                                 "rest:alice");
  EXPECT_EQ(result.at("Stored"), 2);
  ASSERT_EQ(result.at("Problems").size(), 6u) << result.dump(2);
  EXPECT_NE(result.at("Problems")[0].get<std::string>().find("no image with SOPInstanceUID sop-i2"),
            std::string::npos);  // i2 belongs to another study
  EXPECT_NE(result.at("Problems")[1].get<std::string>().find("not declared as binary"), std::string::npos);
  EXPECT_NE(result.at("Problems")[2].get<std::string>().find("100 x 200"), std::string::npos);
  const nlohmann::json stored = labels_.get("1.2.1").at("Boxes");
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[1].at("Box"), (nlohmann::json{50.0, 150.0, 100.0, 200.0}));
  EXPECT_EQ(stored[1].at("Confidence"), 0.7);
  EXPECT_EQ(stored[1].at("Source"), "rest:alice");

  // The same source again replaces its boxes of that image; bulk rows may carry boxes.
  const nlohmann::json bulk = labels_.importRows(nlohmann::json::parse(R"([
    {"StudyInstanceUID": "1.2.1", "Boxes": [{"SOPInstanceUID": "sop-i1", "Finding": "covid", "Box": [0, 0, 5, 5]}]},
    {"StudyInstanceUID": "1.2.2", "Labels": {"covid": 1},
     "Boxes": [{"SOPInstanceUID": "sop-i1", "Finding": "covid", "Box": [0, 0, 5, 5]}]}])"),
                                                 "rest:alice");
  EXPECT_EQ(bulk.at("BoxesStored"), 1);
  EXPECT_EQ(bulk.at("Stored"), 1);
  ASSERT_EQ(bulk.at("Problems").size(), 1u);
  EXPECT_EQ(bulk.at("Problems")[0].at("Row"), 2);
  EXPECT_EQ(labels_.get("1.2.1").at("Boxes").size(), 1u);
  EXPECT_EQ(index_.lesionBoxes("covid").size(), 1u);
}

TEST(LabelSet, IsDeclaredAsBinaryOrGraded) {
  EXPECT_EQ(labelSetFromJson({{"a", "binary"}, {"b", 5}}), (LabelSet{{"a", 2}, {"b", 5}}));
  EXPECT_THROW(labelSetFromJson({{"a", "yes"}}), ConfigError);
  EXPECT_THROW(labelSetFromJson({{"a", 1}}), ConfigError);
  EXPECT_THROW(labelSetFromJson(nlohmann::json::array()), ConfigError);
}

}  // namespace
}  // namespace comcl::plugin
