// comcl to-dicom run as a user would, on the real covid_chestxray_subset (rows 1-4: patient 5 with ARDS,
// patient 17 with COVID-19 in three studies 17_d3, 17_d9, 17_d15; read from manifest.csv with Python).
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "comcl_process.h"
#include "temp_dir.h"

namespace {

namespace fs = std::filesystem;
using comcl::testing::contains;
using comcl::testing::runComcl;
using comcl::testing::TempDir;
const fs::path kCovid = fs::path(COMCL_SHARED_DATA) / "covid_chestxray_subset";

std::string studyUidOf(const fs::path& file) {
  DcmFileFormat dicom;
  OFString uid;
  if (dicom.loadFile(file.string().c_str()).bad() ||
      dicom.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, uid).bad())
    return "";
  return uid.c_str();
}

TEST(CliToDicom, CovidRowsAndTheirLabelsBody) {
  if (!fs::exists(kCovid / "manifest.csv"))
    GTEST_SKIP() << "missing " << kCovid;
  TempDir dir;
  const fs::path out = dir.path() / "dicom";
  const std::string labels = dir.file("labels.json");
  const auto r = runComcl("to-dicom " + kCovid.string() + " --out " + out.string() +
                          " --limit 4 --labels-out " + labels);
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "(4 of 292 rows)")) << r.out;
  EXPECT_TRUE(contains(r.out, "written:     4 DICOM files, 0 failed")) << r.out;
  EXPECT_TRUE(contains(r.out, "patients:    2 (PatientID covid-<patient_id>)")) << r.out;
  EXPECT_TRUE(contains(r.out, "studies:     4\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "views:       AP 3, PA 1")) << r.out;
  EXPECT_TRUE(contains(r.out, "labels:      4 studies with labels -> " + labels)) << r.out;
  EXPECT_EQ(r.err, "");

  const fs::path d3 = out / "covid-17" / "jkms-35-e79-g001-l-a.dcm";
  const fs::path ards = out / "covid-5" / "ARDSSevere.dcm";
  ASSERT_TRUE(fs::is_regular_file(d3));
  ASSERT_TRUE(fs::is_regular_file(ards));
  const nlohmann::json body = nlohmann::json::parse(comcl::testing::readText(labels));
  ASSERT_TRUE(body.is_array());
  ASSERT_EQ(body.size(), 4u);
  nlohmann::json d3Row, ardsRow;
  for (const nlohmann::json& row : body) {
    ASSERT_EQ(row.size(), 2u) << row;  // StudyInstanceUID and Labels, nothing else
    if (row.at("StudyInstanceUID") == studyUidOf(d3))
      d3Row = row;
    if (row.at("StudyInstanceUID") == studyUidOf(ards))
      ardsRow = row;
  }
  ASSERT_FALSE(d3Row.is_null()) << body.dump(1);
  ASSERT_FALSE(ardsRow.is_null()) << body.dump(1);
  EXPECT_EQ(d3Row.at("Labels").at("COVID-19"), 1);
  EXPECT_EQ(d3Row.at("Labels").at("ARDS"), 0);
  EXPECT_EQ(ardsRow.at("Labels").at("ARDS"), 1);
  EXPECT_EQ(ardsRow.at("Labels").at("COVID-19"), 0);

  // --label keeps just the named findings; an unknown name is a warning, not an error.
  const auto only = runComcl("to-dicom " + kCovid.string() + " --out " + out.string() +
                             " --limit 4 --labels-out " + labels + " --label COVID-19 --label Nonexistent");
  ASSERT_EQ(only.exitCode, 0) << only.out << only.err;
  EXPECT_TRUE(contains(only.err, "--label Nonexistent: no written image has that label")) << only.err;
  const nlohmann::json onlyBody = nlohmann::json::parse(comcl::testing::readText(labels));
  ASSERT_EQ(onlyBody.size(), 4u);
  for (const nlohmann::json& row : onlyBody)
    EXPECT_EQ(row.at("Labels").size(), 1u) << row;
  // Same manifest, same UIDs.
  EXPECT_EQ(onlyBody, nlohmann::json::parse(comcl::testing::readText(labels)));
  EXPECT_EQ(studyUidOf(d3), d3Row.at("StudyInstanceUID").get<std::string>());
}

TEST(CliToDicom, BadManifestAndBadArguments) {
  TempDir dir;
  const auto none = runComcl("to-dicom " + dir.path().string() + " --out " + dir.file("out"));
  EXPECT_EQ(none.exitCode, 2);
  EXPECT_TRUE(contains(none.err, "comcl to-dicom: no manifest.csv in " + dir.path().string())) << none.err;

  const auto labelWithoutOut =
      runComcl("to-dicom " + kCovid.string() + " --out " + dir.file("out") + " --label COVID-19");
  EXPECT_NE(labelWithoutOut.exitCode, 0);
  EXPECT_TRUE(contains(labelWithoutOut.err, "--labels-out")) << labelWithoutOut.err;
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

}  // namespace
