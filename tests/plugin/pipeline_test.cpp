// The plugin's whole pipeline inside a real Orthanc 1.10.1: studies sent with DCMTK's storescu (C-STORE) or
// POST /instances are indexed, flagged and annotated; restarts, deletions, floods and the plugin's own SR.
// Every wait is a bounded poll of the REST API.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "comcl/imaging/manifest_import.h"
#include "comcl/imaging/synth.h"
#include "comcl/storage/index.h"
#include "comcl/training/scorer.h"
#include "orthanc_process.h"
#include "temp_dir.h"
#include "test_dicom.h"

namespace comcl::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

const fs::path kMhh = fs::path(COMCL_SHARED_DATA) / "mhh_covid_cxr" / "dicom";
const fs::path kSamples = fs::path(COMCL_SHARED_DATA) / "dicom_samples";

// Polls `done` every 100 ms until it holds or `limit` passes; returns whether it held.
bool waitUntil(const std::function<bool()>& done, std::chrono::seconds limit = std::chrono::seconds(90)) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (done())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

struct CommandResult {
  int status = -1;
  std::string output;
};

CommandResult run(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr)
    return result;
  std::array<char, 4096> chunk{};
  while (std::fgets(chunk.data(), chunk.size(), pipe) != nullptr)
    result.output += chunk.data();
  result.status = ::pclose(pipe);
  return result;
}

// C-STORE with DCMTK's storescu, proposing each file's own transfer syntax; bounded by `timeout`.
CommandResult storescu(const OrthancProcess& orthanc, const std::vector<std::string>& paths,
                       int timeout = 600) {
  std::string command = "timeout " + std::to_string(timeout) +
                        " storescu -aet COMCLSCU -aec COMCLTEST -R +sd +r 127.0.0.1 " +
                        std::to_string(orthanc.dicomPort());
  for (const std::string& path : paths)
    command += " '" + path + "'";
  return run(command);
}

std::string storeByRest(const OrthancProcess& orthanc, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const HttpResponse answer = orthanc.client().post("/instances", bytes, "application/dicom");
  if (answer.status != 200)
    throw std::runtime_error("POST /instances " + path + ": " + std::to_string(answer.status) + " " +
                             answer.body);
  return answer.json().at("ID").get<std::string>();
}

json status(const OrthancProcess& orthanc) {
  return orthanc.client().get("/comcl/status").json();
}

std::vector<std::string> studiesOf(const OrthancProcess& orthanc) {
  return orthanc.client().get("/studies").json().get<std::vector<std::string>>();
}

bool annotated(const OrthancProcess& orthanc, const std::string& study) {
  const HttpResponse answer = orthanc.client().get("/comcl/studies/" + study);
  return answer.status == 200 && answer.json().value("Annotated", false);
}

bool allAnnotated(const OrthancProcess& orthanc, std::size_t studies) {
  const auto ids = studiesOf(orthanc);
  if (ids.size() != studies)
    return false;
  for (const std::string& id : ids) {
    if (!annotated(orthanc, id))
      return false;
  }
  return true;
}

// Orthanc's storage and index in `dir`, for several Orthanc processes in turn on the same archive.
json storageIn(const TempDir& dir) {
  return {{"StorageDirectory", (dir.path() / "storage").string()},
          {"IndexDirectory", (dir.path() / "storage").string()}};
}

// A synthetic archive of `patients` x `studies` studies (frontal + lateral) in `dir`, undegraded unless the
// caller changes the options before writing.
imaging::SynthOptions synthOptions(const TempDir& dir, int patients, int studies, int size) {
  imaging::SynthOptions options;
  options.outputDir = dir.path().string();
  options.patients = patients;
  options.studiesPerPatient = studies;
  options.size = size;
  options.degradedFraction = 0;
  return options;
}

std::vector<std::string> dicomFilesOf(const std::vector<imaging::SynthImage>& images, const fs::path& root) {
  std::vector<std::string> files;
  for (const imaging::SynthImage& image : images)
    files.push_back((root / image.file).string());
  return files;
}

// The files of the first `patients` patient folders of the real MHH archive.
std::vector<std::string> mhhFiles(std::size_t patients, std::set<std::string>* patientDirs = nullptr) {
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(kMhh)) {
    if (entry.is_directory())
      dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  std::vector<std::string> files;
  for (std::size_t i = 0; i < dirs.size() && i < patients; ++i) {
    if (patientDirs)
      patientDirs->insert(dirs[i].string());
    for (const auto& entry : fs::directory_iterator(dirs[i])) {
      if (entry.path().extension() == ".dcm")
        files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

OrthancProcess::Options withPlugin(json comcl = json::object(), json extra = json::object()) {
  OrthancProcess::Options options;
  options.plugins = {COMCL_PLUGIN_PATH};
  options.dicomServer = true;
  options.stableAge = 1;
  comcl["CatchUpInterval"] = comcl.value("CatchUpInterval", 1);
  extra["Comcl"] = comcl;
  options.extraConfig = extra;
  return options;
}

const json kDeclaredResults = {
    {"UserMetadata",
     {{"ComclQuality", 4201}, {"ComclQualityReasons", 4202}, {"ComclModel", 4203}, {"ComclScores", 4204}}},
    {"UserContentType", {{"comcl-report", json::array({4200, "application/json"})}}}};

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kMhh))
      GTEST_SKIP() << "no real data at " << kMhh;
    if (run("command -v storescu").status != 0)
      GTEST_SKIP() << "storescu (dcmtk) is not installed";
  }
};

TEST_F(PipelineTest, RealRadiographsSentWithStorescuAreIndexedFlaggedAndAnnotated) {
  OrthancProcess orthanc(withPlugin(json::object(), kDeclaredResults));
  const std::vector<std::string> files = mhhFiles(4);
  ASSERT_GE(files.size(), 6u);
  const CommandResult sent = storescu(orthanc, files);
  ASSERT_EQ(sent.status, 0) << sent.output;

  const std::size_t studies = studiesOf(orthanc).size();
  ASSERT_GE(studies, 4u);
  ASSERT_TRUE(waitUntil([&] { return allAnnotated(orthanc, studies); }))
      << status(orthanc).dump(2) << orthanc.log();

  const json now = status(orthanc);
  EXPECT_EQ(now.at("Instances"), files.size());
  EXPECT_EQ(now.at("ByDecodeState").at("decoded"), files.size());
  EXPECT_EQ(now.at("StudiesAnnotated"), studies);
  EXPECT_EQ(now.at("Counters").at("Failed"), 0);
  EXPECT_TRUE(now.at("ActiveModel").is_null());

  for (const std::string& study : studiesOf(orthanc)) {
    const json mine = orthanc.client().get("/comcl/studies/" + study).json();
    const json& report = mine.at("Report");
    EXPECT_TRUE(report.at("Model").is_null());
    EXPECT_NE(report.at("ModelMessage").get<std::string>().find("no diagnosis model"), std::string::npos);
    const std::string flag = report.at("Quality").at("Flag");
    EXPECT_TRUE(flag == "good" || flag == "usable" || flag == "reject") << flag;

    // Written back into Orthanc: the attachment (a download in Orthanc Explorer) and the metadata.
    const HttpResponse attachment =
        orthanc.client().get("/studies/" + study + "/attachments/comcl-report/data");
    ASSERT_EQ(attachment.status, 200) << attachment.body;
    EXPECT_EQ(attachment.json().at("Fingerprint"), report.at("Fingerprint"));
    const HttpResponse metadata = orthanc.client().get("/studies/" + study + "/metadata/ComclQuality");
    ASSERT_EQ(metadata.status, 200);
    EXPECT_EQ(metadata.body, flag);
    EXPECT_EQ(orthanc.client().get("/studies/" + study + "/metadata/ComclModel").body, "none");

    for (const json& image : report.at("Images")) {
      const json instance =
          orthanc.client().get("/comcl/instances/" + image.at("OrthancId").get<std::string>()).json();
      EXPECT_EQ(instance.at("DecodeState"), "decoded");
      EXPECT_EQ(instance.at("Study"), study);
      EXPECT_GT(instance.at("Quality").at("Sharpness").get<double>(), 0.0);
      EXPECT_EQ(instance.at("Quality").at("Flag"), image.at("Quality").at("Flag"));
    }
  }
  const json summary = orthanc.client().get("/comcl/quality/summary").json();
  std::int64_t flagged = 0;
  for (const auto& item : summary.at("ByFlag").items())
    flagged += item.value().get<std::int64_t>();
  EXPECT_EQ(flagged, static_cast<std::int64_t>(files.size()));
  EXPECT_EQ(orthanc.log().find("does not declare"), std::string::npos);
}

TEST_F(PipelineTest, WithoutDeclaredMetadataTheLogSaysSoOnceAndTheAttachmentIsStillWritten) {
  OrthancProcess orthanc(withPlugin());
  const std::vector<std::string> files = mhhFiles(3);
  for (const std::string& file : files)
    storeByRest(orthanc, file);
  const std::size_t studies = studiesOf(orthanc).size();
  ASSERT_TRUE(waitUntil([&] { return allAnnotated(orthanc, studies); })) << orthanc.log();
  for (const std::string& study : studiesOf(orthanc)) {
    const HttpResponse attachment = orthanc.client().get("/studies/" + study + "/attachments/4242/data");
    ASSERT_EQ(attachment.status, 200) << attachment.body;
    EXPECT_EQ(attachment.json().at("Format"), "comcl-study-report");
    EXPECT_EQ(orthanc.client().get("/studies/" + study + "/metadata/4201").status, 404);
  }
  const std::string log = orthanc.log();
  const std::string warning = "\"UserMetadata\" does not declare";
  ASSERT_NE(log.find(warning), std::string::npos) << log;
  EXPECT_EQ(log.find(warning, log.find(warning) + 1), std::string::npos) << "said more than once";
}

TEST_F(PipelineTest, SyntheticDegradationsGetTheMatchingFlag) {
  TempDir archive;
  imaging::SynthOptions options = synthOptions(archive, 6, 1, 512);
  options.degradedFraction = 0.7;
  // The clear cases (docs/quality.md): overexposure is ambiguous on a single film and is left out here.
  options.degradations = {imaging::Degradation::Blur, imaging::Degradation::Noise,
                          imaging::Degradation::Underexposed, imaging::Degradation::LowResolution};
  options.seed = 11;
  const std::vector<imaging::SynthImage> images = imaging::writeSyntheticArchive(options);
  OrthancProcess orthanc(withPlugin());
  std::map<std::string, imaging::SynthImage> byId;
  for (const imaging::SynthImage& image : images)
    byId[storeByRest(orthanc, (archive.path() / image.file).string())] = image;
  ASSERT_TRUE(waitUntil([&] { return allAnnotated(orthanc, static_cast<std::size_t>(options.patients)); }))
      << orthanc.log();

  const std::map<imaging::Degradation, std::string> expectedReason = {
      {imaging::Degradation::Blur, "blurred"},
      {imaging::Degradation::Noise, "noisy"},
      {imaging::Degradation::Underexposed, "underexposed"},
      {imaging::Degradation::LowResolution, "low-resolution"}};
  int degraded = 0;
  for (const auto& [id, image] : byId) {
    const json quality = orthanc.client().get("/comcl/instances/" + id).json().at("Quality");
    const std::string flag = quality.at("Flag");
    const std::string reasons = quality.at("Reasons");
    if (image.degradation == imaging::Degradation::None) {
      EXPECT_EQ(flag, "good") << image.file << ": " << reasons;
    } else {
      ++degraded;
      EXPECT_NE(flag, "good") << image.file;
      EXPECT_NE(reasons.find(expectedReason.at(image.degradation)), std::string::npos)
          << image.file << ": " << reasons;
    }
  }
  EXPECT_GT(degraded, 2);
}

TEST_F(PipelineTest, NonImagesAreIndexedAsSkippedAndNeverFailTheStudy) {
  OrthancProcess orthanc(withPlugin());
  const std::string image = storeByRest(orthanc, mhhFiles(1).front());
  const json tags = orthanc.client().get("/instances/" + image + "/simplified-tags").json();
  // A PDF and a foreign SR in the same study.
  std::vector<std::string> others;
  for (const char* sopClass : {"1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.88.11"}) {
    auto object = makeNonImage(sopClass);
    DcmDataset& ds = *object->getDataset();
    ds.putAndInsertString(DCM_PatientID, tags.at("PatientID").get<std::string>().c_str());
    ds.putAndInsertString(DCM_StudyInstanceUID, tags.at("StudyInstanceUID").get<std::string>().c_str());
    const std::vector<char> bytes = toBytes(*object);
    const HttpResponse stored =
        orthanc.client().post("/instances", std::string(bytes.begin(), bytes.end()), "application/dicom");
    ASSERT_EQ(stored.status, 200) << stored.body;
    others.push_back(stored.json().at("ID"));
  }
  ASSERT_EQ(studiesOf(orthanc).size(), 1u);
  const std::string study = studiesOf(orthanc).front();
  ASSERT_TRUE(waitUntil([&] { return annotated(orthanc, study); })) << orthanc.log();
  const json report = orthanc.client().get("/comcl/studies/" + study).json().at("Report");
  EXPECT_EQ(report.at("Images").size(), 3u);
  EXPECT_FALSE(report.at("Quality").at("Flag").is_null());
  for (const std::string& id : others) {
    const json instance = orthanc.client().get("/comcl/instances/" + id).json();
    EXPECT_EQ(instance.at("DecodeState"), "skipped");
    EXPECT_NE(instance.at("DecodeReason").get<std::string>().find("not an image"), std::string::npos);
  }
  EXPECT_EQ(status(orthanc).at("Counters").at("Failed"), 0);
}

TEST_F(PipelineTest, TheOwnStructuredReportLandsInTheStudyAndNeverReEnters) {
  OrthancProcess orthanc(withPlugin({{"StructuredReport", true}}));
  for (const std::string& file : mhhFiles(1))
    storeByRest(orthanc, file);
  const std::vector<std::string> studies = studiesOf(orthanc);
  ASSERT_EQ(studies.size(), 1u);
  const std::string study = studies.front();
  const std::size_t images = orthanc.client().get("/studies/" + study + "/instances").json().size();
  ASSERT_TRUE(waitUntil([&] { return annotated(orthanc, study); })) << orthanc.log();
  const std::string sr = orthanc.client().get("/comcl/studies/" + study).json().at("StructuredReport");
  ASSERT_FALSE(sr.empty());

  const json srTags = orthanc.client().get("/instances/" + sr + "/simplified-tags").json();
  EXPECT_EQ(srTags.at("Modality"), "SR");
  EXPECT_EQ(srTags.at("Manufacturer"), "comcl");
  EXPECT_EQ(orthanc.client().get("/instances/" + sr + "/study").json().at("ID"), study);
  // Storing the SR makes the study unstable again; its second StableStudy must change nothing.
  ASSERT_TRUE(waitUntil([&] {
    return status(orthanc).at("Counters").at("AnnotationsUnchanged").get<int>() >= 1;
  })) << status(orthanc).dump(2);
  EXPECT_EQ(orthanc.client().get("/comcl/instances/" + sr).status, 404);
  EXPECT_EQ(status(orthanc).at("Instances"), images);
  EXPECT_EQ(orthanc.client().get("/studies/" + study + "/instances").json().size(), images + 1);
  EXPECT_EQ(orthanc.client().get("/comcl/studies/" + study).json().at("StructuredReport"), sr);

  // Forced re-annotation replaces the report instead of adding a second one.
  const HttpResponse forced =
      orthanc.client().post("/comcl/studies/" + study + "/score", R"({"Force": true})");
  ASSERT_EQ(forced.status, 200) << forced.body;
  EXPECT_EQ(forced.json().at("Outcome"), "annotated");
  EXPECT_EQ(orthanc.client().get("/studies/" + study + "/instances").json().size(), images + 1);
  EXPECT_EQ(orthanc.client().get("/instances/" + sr).status, 404);
}

TEST_F(PipelineTest, StudiesStoredWhileThePluginWasAbsentOrBeforeStabilityAreCaughtUp) {
  TempDir shared;
  const json storage = storageIn(shared);
  std::vector<std::string> files = mhhFiles(3);
  const std::size_t half = files.size() / 2;
  {
    OrthancProcess::Options bare;
    bare.extraConfig = storage;
    OrthancProcess orthanc(bare);
    for (std::size_t i = 0; i < half; ++i)
      storeByRest(orthanc, files[i]);
  }
  // Now with the plugin, and a StableAge so long that no StableStudy comes before the restart.
  OrthancProcess::Options options = withPlugin(json::object(), storage);
  options.stableAge = 3600;
  OrthancProcess orthanc(options);
  for (std::size_t i = half; i < files.size(); ++i)
    storeByRest(orthanc, files[i]);
  const std::size_t studies = studiesOf(orthanc).size();
  ASSERT_TRUE(waitUntil([&] { return status(orthanc).at("Instances").get<std::size_t>() == files.size(); }))
      << status(orthanc).dump(2);
  // Studies stored before the plugin ran are stable for this Orthanc: the catch-up annotates them; the
  // newer ones wait for their StableStudy, which the stop below loses.
  orthanc.restart();
  EXPECT_TRUE(waitUntil([&] { return allAnnotated(orthanc, studies); }))
      << status(orthanc).dump(2) << orthanc.log();
  EXPECT_EQ(status(orthanc).at("Instances"), files.size());
}

TEST_F(PipelineTest, DeletionRemovesIndexRowsAndCacheEntries) {
  OrthancProcess orthanc(withPlugin());
  for (const std::string& file : mhhFiles(2))
    storeByRest(orthanc, file);
  const std::vector<std::string> studies = studiesOf(orthanc);
  ASSERT_GE(studies.size(), 2u);
  ASSERT_TRUE(waitUntil([&] { return allAnnotated(orthanc, studies.size()); })) << orthanc.log();
  const std::int64_t before = status(orthanc).at("Instances");

  const std::string victim = studies.front();
  const json instances = orthanc.client().get("/studies/" + victim + "/instances").json();
  ASSERT_EQ(orthanc.client().del("/studies/" + victim).status, 200);
  ASSERT_TRUE(waitUntil([&] { return orthanc.client().get("/comcl/studies/" + victim).status == 404; }));
  for (const json& instance : instances)
    EXPECT_EQ(orthanc.client().get("/comcl/instances/" + instance.at("ID").get<std::string>()).status, 404);
  EXPECT_EQ(status(orthanc).at("Instances").get<std::int64_t>(),
            before - static_cast<std::int64_t>(instances.size()));
  EXPECT_TRUE(annotated(orthanc, studies[1]));

  // A single instance too.
  const json rest = orthanc.client().get("/studies/" + studies[1] + "/instances").json();
  const std::string single = rest.front().at("ID");
  ASSERT_EQ(orthanc.client().del("/instances/" + single).status, 200);
  EXPECT_TRUE(waitUntil([&] { return orthanc.client().get("/comcl/instances/" + single).status == 404; }));

  // And a whole patient: every row under it goes.
  const std::string patient = orthanc.client().get("/studies/" + studies.back()).json().at("ParentPatient");
  const json patientInstances = orthanc.client().get("/patients/" + patient + "/instances").json();
  ASSERT_FALSE(patientInstances.empty());
  ASSERT_EQ(orthanc.client().del("/patients/" + patient).status, 200);
  for (const json& instance : patientInstances) {
    const std::string id = instance.at("ID");
    EXPECT_TRUE(waitUntil([&] { return orthanc.client().get("/comcl/instances/" + id).status == 404; }))
        << id;
  }
}

TEST_F(PipelineTest, DeletionsMadeWhileThePluginWasAbsentAreReconciledAtStart) {
  TempDir shared, archive;
  const json storage = storageIn(shared);
  imaging::SynthOptions options = synthOptions(archive, 3, 1, 128);
  const std::vector<imaging::SynthImage> images = imaging::writeSyntheticArchive(options);
  std::vector<std::string> studies;
  {
    OrthancProcess orthanc(withPlugin(json::object(), storage));
    for (const std::string& file : dicomFilesOf(images, archive.path()))
      storeByRest(orthanc, file);
    studies = studiesOf(orthanc);
    ASSERT_EQ(studies.size(), 3u);
    ASSERT_TRUE(waitUntil([&] { return allAnnotated(orthanc, studies.size()); })) << orthanc.log();
  }
  std::string goneInstance;
  {
    OrthancProcess::Options bare;  // the same archive, comcl not loaded
    bare.extraConfig = storage;
    OrthancProcess orthanc(bare);
    ASSERT_EQ(orthanc.client().del("/studies/" + studies[0]).status, 200);
    goneInstance = orthanc.client().get("/studies/" + studies[1] + "/instances").json().front().at("ID");
    ASSERT_EQ(orthanc.client().del("/instances/" + goneInstance).status, 200);
  }
  OrthancProcess orthanc(withPlugin(json::object(), storage));
  EXPECT_TRUE(waitUntil([&] {
    return orthanc.client().get("/comcl/studies/" + studies[0]).status == 404 &&
           orthanc.client().get("/comcl/instances/" + goneInstance).status == 404;
  })) << orthanc.log();
  // The study that lost one film is annotated again with what is left.
  EXPECT_TRUE(waitUntil([&] {
    const json study = orthanc.client().get("/comcl/studies/" + studies[1]).json();
    return study.at("Instances") == 1 && study.at("Report").at("Images").size() == 1;
  })) << orthanc.client().get("/comcl/studies/" + studies[1]).body;
  EXPECT_EQ(orthanc.client().get("/comcl/studies/" + studies[2]).json().at("Instances"), 2);
  EXPECT_EQ(status(orthanc).at("Instances"), 3);
  EXPECT_NE(orthanc.log().find("3 instance(s) deleted from Orthanc while comcl was not running"),
            std::string::npos)
      << orthanc.log();
}

TEST_F(PipelineTest, ReannotatingAnUnchangedStudyIsANoOpUnlessForced) {
  OrthancProcess orthanc(withPlugin());
  for (const std::string& file : mhhFiles(1))
    storeByRest(orthanc, file);
  const std::string study = studiesOf(orthanc).front();
  ASSERT_TRUE(waitUntil([&] { return annotated(orthanc, study); })) << orthanc.log();
  const std::string when = orthanc.client().get("/comcl/studies/" + study).json().at("AnnotatedAt");
  const HttpResponse again = orthanc.client().post("/comcl/studies/" + study + "/score", "");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.json().at("Outcome"), "unchanged");
  EXPECT_EQ(orthanc.client().get("/comcl/studies/" + study).json().at("AnnotatedAt"), when);
  const HttpResponse forced =
      orthanc.client().post("/comcl/studies/" + study + "/score", R"({"Force": true})");
  ASSERT_EQ(forced.status, 200) << forced.body;
  EXPECT_EQ(forced.json().at("Outcome"), "annotated");
}

TEST_F(PipelineTest, BadRequestsGetJsonErrorsWithAMessage) {
  OrthancProcess orthanc(withPlugin());
  const std::string instance = storeByRest(orthanc, mhhFiles(1).front());
  const std::string study = orthanc.client().get("/instances/" + instance + "/study").json().at("ID");
  const auto expectError = [&](const HttpResponse& answer, int code, const std::string& fragment) {
    EXPECT_EQ(answer.status, code) << answer.body;
    const json body = answer.json();
    EXPECT_EQ(body.at("HttpStatus"), code);
    EXPECT_NE(body.at("Message").get<std::string>().find(fragment), std::string::npos) << answer.body;
  };
  expectError(orthanc.client().post("/comcl/studies/" + study + "/score", "{not json"), 400, "JSON object");
  expectError(orthanc.client().post("/comcl/studies/" + study + "/score", "[1]"), 400, "not array");
  expectError(orthanc.client().post("/comcl/studies/" + study + "/score", R"({"Forse": true})"), 400,
              "Forse");
  expectError(orthanc.client().post("/comcl/studies/" + study + "/score", R"({"Force": "yes"})"), 400,
              "Force");
  expectError(orthanc.client().get("/comcl/studies/not-an-id"), 400, "not an Orthanc study id");
  expectError(orthanc.client().get("/comcl/instances/00000000-00000000-00000000-00000000-00000000"), 404,
              "no instance");
  expectError(orthanc.client().get("/comcl/studies/00000000-00000000-00000000-00000000-00000000"), 404,
              "no study");
  expectError(orthanc.client().post("/comcl/studies/00000000-00000000-00000000-00000000-00000000/score", ""),
              404, "no study");
  EXPECT_EQ(orthanc.client().get("/comcl/studies/" + study + "/score").status, 405);
  EXPECT_EQ(orthanc.client().del("/comcl/status").status, 405);
}

TEST_F(PipelineTest, AFloodDoesNotBlockCStoreAndWhatTheQueueDropsIsRecovered) {
  TempDir archive;
  imaging::SynthOptions options = synthOptions(archive, 250, 2, 48);
  options.encodings = {imaging::Encoding::Mono2Uint8};
  const std::vector<imaging::SynthImage> images = imaging::writeSyntheticArchive(options);
  ASSERT_EQ(images.size(), 1000u);
  OrthancProcess orthanc(withPlugin({{"QueueCapacity", 4}, {"Workers", 1}}));
  const CommandResult sent = storescu(orthanc, dicomFilesOf(images, archive.path()));
  ASSERT_EQ(sent.status, 0) << sent.output;
  ASSERT_EQ(orthanc.client().get("/statistics").json().at("CountInstances"), 1000);
  EXPECT_TRUE(waitUntil([&] { return status(orthanc).at("Instances") == 1000; }, std::chrono::seconds(240)))
      << status(orthanc).dump(2);
  const json now = status(orthanc);
  EXPECT_EQ(now.at("ByDecodeState").at("decoded"), 1000);
  std::cout << "[ flood    ] dropped from the queue and recovered from /changes: "
            << now.at("Counters").at("DroppedFromQueue") << "\n";
}

TEST_F(PipelineTest, OrthancStopsCleanlyWithWorkInTheQueueAndResumesAfterwards) {
  TempDir archive;
  imaging::SynthOptions options = synthOptions(archive, 40, 2, 256);
  // Uncompressed files only: storescu -R sends each file as it is.
  options.encodings = {imaging::Encoding::Mono2Uint16, imaging::Encoding::Mono1Uint16};
  const std::vector<imaging::SynthImage> images = imaging::writeSyntheticArchive(options);
  OrthancProcess orthanc(withPlugin({{"Workers", 1}}));
  const CommandResult sent = storescu(orthanc, dicomFilesOf(images, archive.path()));
  ASSERT_EQ(sent.status, 0) << sent.output;
  orthanc.stop();  // with most of the queue still waiting
  ASSERT_TRUE(orthanc.exitStatus().has_value());
  EXPECT_EQ(*orthanc.exitStatus(), 0) << orthanc.log();
  orthanc.restart();
  EXPECT_TRUE(
      waitUntil([&] { return status(orthanc).at("Instances") == images.size(); }, std::chrono::seconds(240)))
      << status(orthanc).dump(2);
}

TEST_F(PipelineTest, JpegTwoThousandFallsBackToOrthancsDecoder) {
  const std::string gdcm = "/usr/share/orthanc/plugins/libOrthancGdcm.so";
  if (!fs::exists(gdcm))
    GTEST_SKIP() << "orthanc-gdcm is not installed";
  OrthancProcess::Options options = withPlugin();
  options.plugins.push_back(gdcm);
  OrthancProcess orthanc(options);
  const std::string id = storeByRest(orthanc, (kSamples / "RG1_J2KI_CR_chest_PA.dcm").string());
  ASSERT_TRUE(waitUntil([&] { return orthanc.client().get("/comcl/instances/" + id).status == 200; }));
  const json instance = orthanc.client().get("/comcl/instances/" + id).json();
  EXPECT_EQ(instance.at("DecodeState"), "decoded") << instance.dump(2);
  EXPECT_NE(instance.at("DecodeReason").get<std::string>().find("fallback"), std::string::npos)
      << instance.dump(2);
  EXPECT_FALSE(instance.at("Quality").at("Flag").is_null());
}

TEST_F(PipelineTest, AnImageNoDecoderCouldReadIsRetriedOnAForcedScoreOnceACodecIsInstalled) {
  const std::string gdcm = "/usr/share/orthanc/plugins/libOrthancGdcm.so";
  if (!fs::exists(gdcm))
    GTEST_SKIP() << "orthanc-gdcm is not installed";
  TempDir shared;
  std::string id, study;
  {
    OrthancProcess orthanc(withPlugin(json::object(), storageIn(shared)));  // no JPEG 2000 decoder at all
    id = storeByRest(orthanc, (kSamples / "RG1_J2KI_CR_chest_PA.dcm").string());
    study = orthanc.client().get("/instances/" + id + "/study").json().at("ID");
    ASSERT_TRUE(waitUntil([&] { return annotated(orthanc, study); })) << orthanc.log();
    EXPECT_EQ(orthanc.client().get("/comcl/instances/" + id).json().at("DecodeState"), "unsupported");
  }
  OrthancProcess::Options options = withPlugin(json::object(), storageIn(shared));
  options.plugins.push_back(gdcm);
  OrthancProcess orthanc(options);
  const HttpResponse unforced = orthanc.client().post("/comcl/studies/" + study + "/score", "");
  ASSERT_EQ(unforced.status, 200) << unforced.body;
  EXPECT_EQ(orthanc.client().get("/comcl/instances/" + id).json().at("DecodeState"), "unsupported");
  const HttpResponse forced =
      orthanc.client().post("/comcl/studies/" + study + "/score", R"({"Force": true})");
  ASSERT_EQ(forced.status, 200) << forced.body;
  EXPECT_EQ(orthanc.client().get("/comcl/instances/" + id).json().at("DecodeState"), "decoded");
  EXPECT_FALSE(forced.json().at("Report").at("Quality").at("Flag").is_null());
}

TEST_F(PipelineTest, OrthancsMetricsShowTheQueueCountsAndLatency) {
  OrthancProcess orthanc(withPlugin());
  for (const std::string& file : mhhFiles(1))
    storeByRest(orthanc, file);
  const std::size_t files = mhhFiles(1).size();
  ASSERT_TRUE(waitUntil([&] { return status(orthanc).at("Instances") == files; }));
  const std::string metrics = orthanc.client().get("/tools/metrics-prometheus").body;
  for (const char* name : {"comcl_ingest_queue_depth", "comcl_instances_processed", "comcl_instances_failed",
                           "comcl_ingest_latency_ms", "comcl_scoring_queue_depth"}) {
    EXPECT_NE(metrics.find(name), std::string::npos) << name << "\n" << metrics;
  }
  EXPECT_NE(metrics.find("comcl_instances_processed " + std::to_string(files)), std::string::npos) << metrics;
}

// Writes a tiny two-finding model as version `version` into HOME/models/vN and registers it in the index at
// `database` with `status`.
void registerTinyModel(const fs::path& home, const fs::path& database, int version,
                       const std::string& status) {
  training::ModelFile model;
  model.version = version;
  model.architecture = {{"name", "tiny-cnn"}, {"params", {{"width", 4}, {"depth", 2}}}};
  model.inputSize = 64;
  model.findings = {"covid", "icu"};
  model.method = "supervised";
  torch::manual_seed(version);
  auto network = training::buildNetwork(model.architecture, 1, 2);
  const std::string directory = "v" + std::to_string(version);
  training::writeModelDirectory((home / "models" / directory).string(), model, *network);
  storage::Index index(database.string());
  storage::ModelVersionRecord record;
  record.version = version;
  record.path = directory;
  record.status = status;
  index.putModelVersion(record);
}

TEST_F(PipelineTest, ScoresComeFromTheActiveModel) {
  TempDir home;
  const fs::path database = home.path() / "comcl.sqlite";
  registerTinyModel(home.path(), database, 1, "active");
  storage::Index(database.string()).setValue("active_model_version", "1");
  OrthancProcess orthanc(withPlugin(
      {{"DatabasePath", database.string()}, {"ModelDirectory", (home.path() / "models").string()}}));
  ASSERT_EQ(status(orthanc).at("ActiveModel").at("Version"), 1) << status(orthanc).dump(2);
  for (const std::string& file : mhhFiles(1))
    storeByRest(orthanc, file);
  const std::string study = studiesOf(orthanc).front();
  ASSERT_TRUE(waitUntil([&] { return annotated(orthanc, study); })) << orthanc.log();
  const json report = orthanc.client().get("/comcl/studies/" + study).json().at("Report");
  EXPECT_EQ(report.at("Model").at("Version"), 1);
  for (const char* finding : {"covid", "icu"}) {
    const double score = report.at("Scores").at(finding);
    EXPECT_GE(score, 0.0);
    EXPECT_LE(score, 1.0);
  }
  for (const json& image : report.at("Images")) {
    const json instance =
        orthanc.client().get("/comcl/instances/" + image.at("OrthancId").get<std::string>()).json();
    ASSERT_EQ(instance.at("Predictions").size(), 2u);
    EXPECT_EQ(instance.at("Predictions")[0].at("ModelVersion"), 1);
  }
}

// The registry over REST: list, one version, activation and rollback (the scorer follows at once), the
// PyTorch weights download, and clear errors for unknown or malformed versions.
TEST_F(PipelineTest, ModelVersionsAreListedActivatedRolledBackAndDownloaded) {
  TempDir home;
  const fs::path database = home.path() / "comcl.sqlite";
  registerTinyModel(home.path(), database, 1, "candidate");
  registerTinyModel(home.path(), database, 2, "candidate");
  OrthancProcess orthanc(withPlugin(
      {{"DatabasePath", database.string()}, {"ModelDirectory", (home.path() / "models").string()}}));
  const HttpClient client = orthanc.client();

  const json listed = client.get("/comcl/models").json();
  EXPECT_EQ(listed.at("Active"), nullptr);
  ASSERT_EQ(listed.at("Models").size(), 2u);
  EXPECT_EQ(client.get("/comcl/models/1").json().at("Model").at("findings"), json::array({"covid", "icu"}));

  json activated = client.post("/comcl/models/2/activate", "").json();
  EXPECT_EQ(activated.at("Active"), 2);
  EXPECT_EQ(activated.at("Previous"), nullptr);
  EXPECT_TRUE(activated.at("RescoreJob").is_string());  // Comcl.RescoreOnActivation is on by default
  EXPECT_EQ(status(orthanc).at("ActiveModel").at("Version"), 2);
  activated = client.post("/comcl/models/1/activate", "").json();
  EXPECT_EQ(activated.at("Active"), 1);
  EXPECT_EQ(activated.at("Previous"), 2);
  EXPECT_EQ(status(orthanc).at("ActiveModel").at("Version"), 1);
  EXPECT_EQ(client.get("/comcl/models/2").json().at("Status"), "retired");

  const HttpResponse weights = client.get("/comcl/models/1/weights");
  ASSERT_EQ(weights.status, 200);
  EXPECT_EQ(weights.body.substr(0, 2), "PK");  // torch.save's zip container
  EXPECT_EQ(client.get("/comcl/models/9").status, 404);
  EXPECT_EQ(client.post("/comcl/models/9/activate", "").status, 404);
  EXPECT_EQ(client.get("/comcl/models/latest").status, 400);
  EXPECT_EQ(client.get("/comcl/models/1/activate").status, 405);
}

// Labels through REST: one study's labels checked against Comcl.Labels, read back with their source, bulk
// rows by StudyInstanceUID reported one by one, and clear errors.
TEST_F(PipelineTest, StudiesAreLabelledThroughRest) {
  OrthancProcess orthanc(withPlugin({{"Labels", {{"covid", "binary"}, {"severity", 4}}}}));
  const HttpClient client = orthanc.client();
  const std::string instance = storeByRest(orthanc, mhhFiles(1).front());
  const std::string study = studiesOf(orthanc).front();
  ASSERT_TRUE(waitUntil([&] { return client.get("/comcl/studies/" + study + "/labels").status == 200; }))
      << orthanc.log();
  const json image = client.get("/comcl/instances/" + instance).json();
  const json box = {
      {"SOPInstanceUID", image.at("SOPInstanceUID")}, {"Finding", "covid"}, {"Box", {10, 20, 60, 90}}};
  const HttpResponse boxed = client.put("/comcl/studies/" + study + "/labels", json{{"Boxes", {box}}}.dump());
  ASSERT_EQ(boxed.status, 200) << boxed.body;
  EXPECT_EQ(boxed.json().at("BoxesStored"), 1);
  const json outside = {{"SOPInstanceUID", image.at("SOPInstanceUID")},
                        {"Finding", "covid"},
                        {"Box", {0, 0, image.at("Columns").get<int>() + 1, 10}}};
  EXPECT_EQ(client.put("/comcl/studies/" + study + "/labels", json{{"Boxes", {outside}}}.dump()).status, 400);
  EXPECT_EQ(client.get("/comcl/studies/" + study + "/labels").json().at("Boxes").size(), 1u);

  const HttpResponse put =
      client.put("/comcl/studies/" + study + "/labels", R"({"Labels": {"covid": 1, "edema": 1}})");
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(put.json().at("Stored"), 1);
  EXPECT_EQ(put.json().at("Problems").size(), 1u);
  const json stored = client.get("/comcl/studies/" + study + "/labels").json();
  EXPECT_EQ(stored.at("Labels").at("covid"), (json{{"Value", 1.0}, {"Source", "rest:alice"}}));
  const std::string uid = stored.at("StudyInstanceUID");

  const json bulk =
      client
          .post("/comcl/labels", json::array({{{"StudyInstanceUID", uid}, {"Labels", {{"severity", 2}}}},
                                              {{"StudyInstanceUID", "1.2.3"}, {"Labels", {{"covid", 0}}}}})
                                     .dump())
          .json();
  EXPECT_EQ(bulk.at("Stored"), 1);
  ASSERT_EQ(bulk.at("Problems").size(), 1u);
  EXPECT_EQ(bulk.at("Problems")[0].at("Row"), 2);
  EXPECT_EQ(client.get("/comcl/studies/" + study + "/labels").json().at("Labels").at("severity").at("Value"),
            2.0);

  EXPECT_EQ(client.put("/comcl/studies/" + study + "/labels", R"({"Labels": {"covid": 7}})").status, 400);
  EXPECT_EQ(client.put("/comcl/studies/" + study + "/labels", "not json").status, 400);
  EXPECT_EQ(client.post("/comcl/labels", "{}").status, 400);
  EXPECT_EQ(client.get("/comcl/studies/00000000-00000000-00000000-00000000-00000000/labels").status, 404);
}

// Comcl.PrivilegedUsers: a user Orthanc lets in but the list does not name reads the registry and gets 403
// on activation; a named user activates.
TEST_F(PipelineTest, OnlyPrivilegedUsersActivateModels) {
  TempDir home;
  const fs::path database = home.path() / "comcl.sqlite";
  registerTinyModel(home.path(), database, 1, "candidate");
  OrthancProcess orthanc(
      withPlugin({{"DatabasePath", database.string()},
                  {"ModelDirectory", (home.path() / "models").string()},
                  {"PrivilegedUsers", {"alice"}}},
                 {{"RegisteredUsers", {{"alice", "orthanctest"}, {"bob", "bobs-secret"}}}}));
  const HttpClient bob(orthanc.httpPort(), std::make_pair(std::string("bob"), std::string("bobs-secret")));
  EXPECT_EQ(bob.get("/comcl/models").status, 200);
  const HttpResponse refused = bob.post("/comcl/models/1/activate", "");
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_NE(refused.body.find("PrivilegedUsers"), std::string::npos) << refused.body;
  EXPECT_EQ(status(orthanc).at("ActiveModel"), nullptr);
  EXPECT_EQ(orthanc.client().post("/comcl/models/1/activate", "").status, 200);  // alice
  EXPECT_EQ(status(orthanc).at("ActiveModel").at("Version"), 1);
}

// --- retraining through REST (issue 6)

// The StudyInstanceUID of a DICOM file.
std::string studyUidOf(const std::string& path) {
  DcmFileFormat file;
  if (file.loadFile(path.c_str()).bad())
    throw std::runtime_error("cannot read " + path);
  OFString uid;
  file.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, uid);
  return uid.c_str();
}

// POST /comcl/labels rows for MHH files: each file's study with the manifest's label_icu_ever as "icu".
json mhhIcuLabelRows(const std::vector<std::string>& files) {
  const imaging::CsvTable manifest = imaging::readCsvFile((kMhh.parent_path() / "manifest.csv").string());
  const std::size_t fileColumn = *manifest.column("dicom_file");
  const std::size_t icuColumn = *manifest.column("label_icu_ever");
  std::map<std::string, int> icuOfFile;
  for (const imaging::CsvRecord& record : manifest.records)
    icuOfFile[(kMhh.parent_path() / record.fields[fileColumn]).string()] =
        std::stoi(record.fields[icuColumn]);
  json rows = json::array();
  for (const std::string& file : files)
    rows.push_back({{"StudyInstanceUID", studyUidOf(file)}, {"Labels", {{"icu", icuOfFile.at(file)}}}});
  return rows;
}

const json kTinyTraining = {{"Method", "medaug"}, {"Epochs", 1}, {"ImageSize", 32},
                            {"BatchSize", 8},     {"Seed", 1},   {"Device", "cpu"}};

// Orthanc's job, polled until it leaves the pending/running states.
json finishedJob(const HttpClient& client, const std::string& job, std::chrono::seconds limit) {
  json answer;
  waitUntil(
      [&] {
        answer = client.get("/jobs/" + job).json();
        const std::string state = answer.at("State");
        return state != "Pending" && state != "Running";
      },
      limit);
  return answer;
}

class RetrainingTest : public PipelineTest {
 protected:
  // MHH films of 14 patients through storescu, the last patient's kept back as "new"; every image indexed
  // and its study labelled.
  void storeAndLabel(OrthancProcess& orthanc) {
    std::vector<std::string> files = mhhFiles(14, &patients_);
    const std::string lastPatient = *patients_.rbegin();
    for (const std::string& file : files)
      (file.rfind(lastPatient, 0) == 0 ? later_ : stored_).push_back(file);
    const CommandResult sent = storescu(orthanc, stored_);
    ASSERT_EQ(sent.status, 0) << sent.output;
    ASSERT_TRUE(waitUntil([&] { return status(orthanc).at("Instances") == stored_.size(); }))
        << status(orthanc).dump(2);
    const json labelled = orthanc.client().post("/comcl/labels", mhhIcuLabelRows(stored_).dump()).json();
    ASSERT_EQ(labelled.at("Problems").size(), 0u) << labelled.dump(2);
  }
  std::set<std::string> patients_;
  std::vector<std::string> stored_, later_;
};

// The loop users bought comcl for: label the archive, train through REST as an Orthanc job, see the run and
// the registered version with its held-out metrics, activate it (the archive is re-scored), and a new study
// is scored by that version. A second request while a run goes gets 409 with that run's job; a cancelled run
// registers nothing; a user Comcl.PrivilegedUsers does not name gets 403 and keeps read access.
TEST_F(RetrainingTest, TheArchiveTrainsTheModelThatScoresIt) {
  TempDir home;
  OrthancProcess orthanc(
      withPlugin({{"DatabasePath", (home.path() / "comcl.sqlite").string()},
                  {"ImageSize", 64},
                  {"Labels", {{"icu", "binary"}}},
                  {"Promotion", "never"},
                  {"PrivilegedUsers", {"alice"}}},
                 {{"RegisteredUsers", {{"alice", "orthanctest"}, {"bob", "bobs-secret"}}}}));
  const HttpClient client = orthanc.client();  // alice
  const HttpClient bob(orthanc.httpPort(), std::make_pair(std::string("bob"), std::string("bobs-secret")));
  storeAndLabel(orthanc);

  const HttpResponse refused = bob.post("/comcl/train", kTinyTraining.dump());
  EXPECT_EQ(refused.status, 403) << refused.body;
  EXPECT_EQ(bob.get("/comcl/runs").status, 200);
  EXPECT_EQ(client.post("/comcl/train", R"({"Method": "simclr"})").status, 400);
  EXPECT_EQ(client.post("/comcl/train", "[1").status, 400);

  // A long run, refused company, then cancelled: nothing registered.
  json longRun = kTinyTraining;
  longRun["Epochs"] = 1000;
  const json first = client.post("/comcl/train", longRun.dump()).json();
  ASSERT_TRUE(first.contains("ID")) << first.dump();
  const HttpResponse busy = client.post("/comcl/train", kTinyTraining.dump());
  EXPECT_EQ(busy.status, 409) << busy.body;
  EXPECT_EQ(busy.json().at("JobId"), first.at("ID"));
  EXPECT_EQ(busy.json().at("RunId"), first.at("RunId"));
  ASSERT_EQ(client.post("/jobs/" + first.at("ID").get<std::string>() + "/cancel", "{}").status, 200);
  const json cancelled = finishedJob(client, first.at("ID"), std::chrono::seconds(60));
  EXPECT_EQ(cancelled.at("State"), "Failure") << cancelled.dump(2);
  const json cancelledRun = client.get(first.at("Run").get<std::string>()).json();
  EXPECT_EQ(cancelledRun.at("State"), "canceled") << cancelledRun.dump(2);
  EXPECT_TRUE(client.get("/comcl/models").json().at("Models").empty());

  // The real run.
  const HttpResponse started = client.post("/comcl/train", kTinyTraining.dump());
  ASSERT_EQ(started.status, 200) << started.body;
  const std::string job = started.json().at("ID");
  const json done = finishedJob(client, job, std::chrono::seconds(600));
  ASSERT_EQ(done.at("State"), "Success") << done.dump(2) << orthanc.log();
  EXPECT_EQ(done.at("Type"), "ComclTraining");
  EXPECT_EQ(done.at("Progress"), 100);
  EXPECT_EQ(done.at("Content").at("ModelVersion"), 1);
  EXPECT_EQ(done.at("Content").at("Promoted"), false);  // Promotion "never"

  const json run = client.get(started.json().at("Run").get<std::string>()).json();
  EXPECT_EQ(run.at("State"), "succeeded");
  EXPECT_EQ(run.at("JobId"), job);
  EXPECT_EQ(run.at("Request").at("RequestedBy"), "alice");
  EXPECT_EQ(run.at("Loss").size(), 1u);
  for (const char* stage : {"snapshot", "pre-train", "heads", "register"})
    EXPECT_TRUE(run.at("Stages").contains(stage)) << run.dump(2);
  const json model = client.get("/comcl/models/1").json();
  EXPECT_EQ(model.at("Status"), "candidate");
  EXPECT_EQ(model.at("RunId"), run.at("Id"));
  EXPECT_EQ(model.at("RequestedBy"), "alice");
  EXPECT_EQ(model.at("TrainingRequest").at("Epochs"), 1);
  EXPECT_TRUE(model.at("Metrics").contains("dataSnapshot"));
  EXPECT_TRUE(model.at("Metrics").at("split").contains("id"));
  const json icu = model.at("Metrics").at("labels")[0];
  EXPECT_EQ(icu.at("finding"), "icu");
  EXPECT_GT(icu.at("testImages").get<int>(), 0);  // evaluated on held-out patients
  EXPECT_EQ(client.get("/comcl/runs").json().size(), 2u);

  // Activation re-scores the archive with version 1.
  const json activated = client.post("/comcl/models/1/activate", "").json();
  ASSERT_TRUE(activated.at("RescoreJob").is_string()) << activated.dump();
  const json rescored = finishedJob(client, activated.at("RescoreJob"), std::chrono::seconds(300));
  EXPECT_EQ(rescored.at("State"), "Success") << rescored.dump(2);
  const std::string oldStudy = studiesOf(orthanc).front();
  EXPECT_EQ(client.get("/comcl/studies/" + oldStudy).json().at("ModelVersion"), 1);

  // A new study is scored by that version.
  const std::vector<std::string> storedStudies = studiesOf(orthanc);
  const std::set<std::string> before(storedStudies.begin(), storedStudies.end());
  ASSERT_EQ(storescu(orthanc, later_).status, 0);
  std::string newStudy;
  ASSERT_TRUE(waitUntil([&] {
    for (const std::string& id : studiesOf(orthanc)) {
      if (before.count(id) == 0 && annotated(orthanc, id))
        newStudy = id;
    }
    return !newStudy.empty();
  }));
  const json scored = client.get("/comcl/studies/" + newStudy).json();
  EXPECT_EQ(scored.at("ModelVersion"), 1) << scored.dump(2);
  EXPECT_TRUE(scored.at("Report").at("Scores").contains("icu")) << scored.dump(2);
}

// kill -9 in the middle of pre-training: after the restart the run is interrupted, the registry and the
// active model are as they were, and the database passes SQLite's integrity check.
TEST_F(RetrainingTest, AKilledRunIsMarkedInterruptedAndChangesNothing) {
  TempDir home;
  const fs::path database = home.path() / "comcl.sqlite";
  OrthancProcess orthanc(
      withPlugin({{"DatabasePath", database.string()}, {"ImageSize", 64}, {"Labels", {{"icu", "binary"}}}}));
  const HttpClient client = orthanc.client();
  storeAndLabel(orthanc);
  json longRun = kTinyTraining;
  longRun["Epochs"] = 1000;
  const json started = client.post("/comcl/train", longRun.dump()).json();
  ASSERT_TRUE(started.contains("Run")) << started.dump();
  const std::string runPath = started.at("Run");
  ASSERT_TRUE(waitUntil([&] { return orthanc.client().get(runPath).json().at("Stage") == "pre-train"; }))
      << client.get(runPath).body;

  orthanc.kill();
  orthanc.restart();
  const json interrupted = orthanc.client().get(runPath).json();
  EXPECT_EQ(interrupted.at("State"), "interrupted") << interrupted.dump(2);
  EXPECT_NE(interrupted.at("Error").get<std::string>().find("nothing was registered"), std::string::npos);
  EXPECT_TRUE(orthanc.client().get("/comcl/models").json().at("Models").empty());
  EXPECT_EQ(status(orthanc).at("ActiveModel"), nullptr);
  EXPECT_TRUE(status(orthanc).at("Training").is_null());
  const CommandResult check = run("sqlite3 '" + database.string() + "' 'PRAGMA integrity_check'");
  EXPECT_EQ(check.output, "ok\n");
  EXPECT_EQ(orthanc.client().post("/comcl/train", kTinyTraining.dump()).status, 200);  // not stuck as busy
}

// Orthanc stopped (SIGTERM) in the middle of pre-training exits cleanly and in time: the plugin stops the
// run at its next step and records it as interrupted; nothing is registered.
TEST_F(RetrainingTest, StoppingOrthancMidRunEndsItCleanly) {
  TempDir home;
  OrthancProcess orthanc(withPlugin({{"DatabasePath", (home.path() / "comcl.sqlite").string()},
                                     {"ImageSize", 64},
                                     {"Labels", {{"icu", "binary"}}}}));
  storeAndLabel(orthanc);
  json longRun = kTinyTraining;
  longRun["Epochs"] = 1000;
  const json started = orthanc.client().post("/comcl/train", longRun.dump()).json();
  ASSERT_TRUE(started.contains("Run")) << started.dump();
  const std::string runPath = started.at("Run");
  ASSERT_TRUE(waitUntil([&] { return orthanc.client().get(runPath).json().at("Stage") == "pre-train"; }));
  orthanc.stop();  // SIGTERM; SIGKILL only after Options::stopTimeout
  ASSERT_TRUE(orthanc.exitStatus().has_value());
  EXPECT_EQ(*orthanc.exitStatus(), 0) << orthanc.log();
  orthanc.restart();
  const json run = orthanc.client().get(runPath).json();
  EXPECT_EQ(run.at("State"), "interrupted") << run.dump(2);
  EXPECT_TRUE(orthanc.client().get("/comcl/models").json().at("Models").empty());
}

}  // namespace
}  // namespace comcl::testing
