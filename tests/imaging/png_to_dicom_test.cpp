// PNG data sets with a manifest.csv written as DICOM files: the real covid_chestxray_subset and
// nih_cxr14_subset in ../shared/data (read by path), read back with DCMTK and with comcl's own decoder.
//
// Expected values come from reading the manifests with Python's csv module, not from the implementation:
// covid rows 1-4 are patient 5 (ARDSSevere, PA, no sex/age, no offset) and patient 17 (M, 54, AP, studies
// 17_d3, 17_d9, 17_d15 with offset_days 3, 9, 15); rows 5-6 are one study 20_dNA (PA and L views); rows 33-34
// are "AP Supine"; row 212 has an empty view and row 259 the view "?". NIH row 1 is 00000075 (F, 61, PA,
// Cardiomegaly, follow_up 0), row 2 is 00000100 (M, 60, Atelectasis|Effusion|Infiltration), row 6 is
// 00000284 with follow_up 5.
#include "comcl/imaging/png_to_dicom.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "comcl/imaging/decode.h"
#include "comcl/imaging/png.h"
#include "temp_dir.h"

namespace comcl::imaging {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

const fs::path kCovid = fs::path(COMCL_SHARED_DATA) / "covid_chestxray_subset";
const fs::path kNih = fs::path(COMCL_SHARED_DATA) / "nih_cxr14_subset";

// A file read back with DCMTK.
class DicomFile {
 public:
  explicit DicomFile(const std::string& path) { loaded_ = file_.loadFile(path.c_str()).good(); }
  bool loaded() const { return loaded_; }
  // The attribute's value, "<absent>" when the file has no such attribute.
  std::string text(const DcmTagKey& key) {
    OFString value;
    if (file_.getDataset()->findAndGetOFStringArray(key, value).bad())
      return "<absent>";
    return value.c_str();
  }
  std::string transferSyntax() {
    OFString value;
    file_.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, value);
    return value.c_str();
  }
  std::vector<std::uint8_t> pixels() {
    const Uint8* data = nullptr;
    unsigned long count = 0;
    if (file_.getDataset()->findAndGetUint8Array(DCM_PixelData, data, &count).bad() || data == nullptr)
      return {};
    return std::vector<std::uint8_t>(data, data + count);
  }

 private:
  DcmFileFormat file_;
  bool loaded_ = false;
};

// The PNG's 8-bit samples, as libpng gives them (readPng scales them to [0, 1]).
std::vector<std::uint8_t> pngSamples(const fs::path& png) {
  const Image image = readPng(png.string());
  std::vector<std::uint8_t> out;
  for (float v : image.pixels)
    out.push_back(static_cast<std::uint8_t>(std::lround(v * 255.0f)));
  return out;
}

std::vector<char> bytesOf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// 2020-01-01 plus `days`, by the C library's calendar (independent of the code under test).
std::string baseDatePlus(int days) {
  std::tm t{};
  t.tm_year = 2020 - 1900;
  t.tm_mon = 0;
  t.tm_mday = 1 + days;
  t.tm_hour = 12;
  const std::time_t when = timegm(&t);
  std::tm out{};
  gmtime_r(&when, &out);
  char text[16];
  std::strftime(text, sizeof text, "%Y%m%d", &out);
  return text;
}

const DicomFromPng* byImage(const PngToDicomReport& report, const std::string& imageId) {
  for (const DicomFromPng& image : report.written) {
    if (image.imageId == imageId)
      return &image;
  }
  return nullptr;
}

// Writes a manifest.csv into `dir` (lines joined by newlines).
void writeManifest(const TempDir& dir, const std::vector<std::string>& lines) {
  std::ofstream out(dir.file("manifest.csv"), std::ios::binary);
  for (const std::string& line : lines)
    out << line << "\n";
}

class CovidToDicom : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kCovid / "manifest.csv"))
      return;
    out_ = std::make_unique<TempDir>();
    PngToDicomOptions options;
    options.outputDir = out_->file("dicom");
    report_ = std::make_unique<PngToDicomReport>(convertToDicom(kCovid.string(), options));
  }
  static void TearDownTestSuite() {
    report_.reset();
    out_.reset();
  }
  void SetUp() override {
    if (!report_)
      GTEST_SKIP() << "missing " << kCovid;
  }
  static const DicomFromPng& image(const std::string& imageId) {
    const DicomFromPng* found = byImage(*report_, imageId);
    if (found == nullptr)
      throw std::runtime_error("not written: " + imageId);
    return *found;
  }
  static std::unique_ptr<TempDir> out_;
  static std::unique_ptr<PngToDicomReport> report_;
};
std::unique_ptr<TempDir> CovidToDicom::out_;
std::unique_ptr<PngToDicomReport> CovidToDicom::report_;

TEST_F(CovidToDicom, EveryRowIsWrittenWithoutFailures) {
  EXPECT_EQ(report_->rows, 292u);
  EXPECT_EQ(report_->considered, 292u);
  EXPECT_EQ(report_->written.size(), 292u);
  EXPECT_TRUE(report_->failures.empty());
  EXPECT_EQ(report_->datasetTag, "covid");
  std::size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(out_->file("dicom"))) {
    if (entry.is_regular_file()) {
      ++files;
      EXPECT_EQ(entry.path().extension(), ".dcm") << entry.path();
    }
  }
  EXPECT_EQ(files, 292u);
}

TEST_F(CovidToDicom, PatientStudyAndImageTags) {
  const DicomFromPng& row2 = image("jkms-35-e79-g001-l-a");
  EXPECT_EQ(row2.path, (fs::path(out_->file("dicom")) / "covid-17" / "jkms-35-e79-g001-l-a.dcm").string());
  DicomFile f(row2.path);
  ASSERT_TRUE(f.loaded());
  EXPECT_EQ(f.transferSyntax(), UID_LittleEndianExplicitTransferSyntax);
  EXPECT_EQ(f.text(DCM_SOPClassUID), UID_SecondaryCaptureImageStorage);
  EXPECT_EQ(f.text(DCM_ConversionType), "WSD");
  EXPECT_EQ(f.text(DCM_Modality), "DX");  // "X-ray" in the manifest
  EXPECT_EQ(f.text(DCM_ImageType), "DERIVED\\SECONDARY");
  EXPECT_EQ(f.text(DCM_BodyPartExamined), "CHEST");
  EXPECT_EQ(f.text(DCM_PatientID), "covid-17");
  EXPECT_EQ(f.text(DCM_PatientSex), "M");
  EXPECT_EQ(f.text(DCM_PatientAge), "054Y");
  EXPECT_EQ(f.text(DCM_StudyID), "17_d3");
  EXPECT_EQ(f.text(DCM_AccessionNumber), "17_d3");
  EXPECT_EQ(f.text(DCM_StudyDate), baseDatePlus(3));
  EXPECT_EQ(f.text(DCM_ViewPosition), "AP");
  EXPECT_EQ(f.text(DCM_PhotometricInterpretation), "MONOCHROME2");
  EXPECT_EQ(f.text(DCM_BitsAllocated), "8");
  EXPECT_EQ(f.text(DCM_StudyInstanceUID), row2.studyInstanceUid);
  EXPECT_EQ(f.text(DCM_SeriesInstanceUID), row2.seriesInstanceUid);
  EXPECT_EQ(f.text(DCM_SOPInstanceUID), row2.sopInstanceUid);
  EXPECT_EQ(row2.studyInstanceUid.rfind("2.25.", 0), 0u) << row2.studyInstanceUid;
  EXPECT_LE(row2.studyInstanceUid.size(), 64u);
  const std::string comments = f.text(DCM_ImageComments);
  EXPECT_NE(comments.find("covid_chestxray_subset/images/jkms-35-e79-g001-l-a.png"), std::string::npos)
      << comments;
  EXPECT_NE(comments.find("licence: CC BY-NC-SA"), std::string::npos) << comments;
  EXPECT_NE(f.text(DCM_DerivationDescription).find("covid_chestxray_subset/images/jkms-35-e79-g001-l-a.png"),
            std::string::npos);

  // Row 1: no sex, no age, no offset: empty PatientSex, no PatientAge, the base date.
  DicomFile first(image("ARDSSevere").path);
  ASSERT_TRUE(first.loaded());
  EXPECT_EQ(first.text(DCM_PatientID), "covid-5");
  EXPECT_EQ(first.text(DCM_PatientSex), "");
  EXPECT_EQ(first.text(DCM_PatientAge), "<absent>");
  EXPECT_EQ(first.text(DCM_StudyDate), baseDatePlus(0));
  EXPECT_EQ(first.text(DCM_ViewPosition), "PA");
}

TEST_F(CovidToDicom, StudiesGroupImagesAndPatientsStayApart) {
  // One study, two views.
  const DicomFromPng& pa = image("covid-19-pneumonia-15-PA");
  const DicomFromPng& lateral = image("covid-19-pneumonia-15-L");
  EXPECT_EQ(pa.studyInstanceUid, lateral.studyInstanceUid);
  EXPECT_NE(pa.seriesInstanceUid, lateral.seriesInstanceUid);
  EXPECT_NE(pa.sopInstanceUid, lateral.sopInstanceUid);
  // Three studies of patient 17, and another patient.
  const DicomFromPng& d3 = image("jkms-35-e79-g001-l-a");
  const DicomFromPng& d9 = image("jkms-35-e79-g001-l-b");
  EXPECT_NE(d3.studyInstanceUid, d9.studyInstanceUid);
  EXPECT_NE(d3.studyInstanceUid, pa.studyInstanceUid);
  EXPECT_EQ(d3.patientId, d9.patientId);
  EXPECT_NE(d3.patientId, pa.patientId);

  // Every UID is unique where it must be: one SOP instance per row, one study per (patient, study_id).
  std::set<std::string> sops;
  std::map<std::string, std::string> studyOfKey;
  for (const DicomFromPng& w : report_->written) {
    EXPECT_TRUE(sops.insert(w.sopInstanceUid).second) << w.imageId;
    const auto [it, added] = studyOfKey.emplace(w.patientId + "|" + w.studyKey, w.studyInstanceUid);
    EXPECT_EQ(it->second, w.studyInstanceUid) << w.imageId;
  }
  std::set<std::string> studyUids;
  for (const auto& [key, uid] : studyOfKey)
    EXPECT_TRUE(studyUids.insert(uid).second) << key;
  EXPECT_EQ(studyUids.size(), 232u);  // distinct (patient_id, study_id) pairs in the manifest
}

TEST_F(CovidToDicom, ViewPositions) {
  EXPECT_EQ(image("covid-19-pneumonia-15-L").viewPosition, std::optional<std::string>("LL"));
  EXPECT_EQ(image("aspiration-pneumonia-5-day0").viewPosition, std::optional<std::string>("AP"));
  EXPECT_EQ(image("covid-19-pneumonia-15-PA").viewPosition, std::optional<std::string>("PA"));
  const DicomFromPng& empty = image("665f7ed5dcf52f235d8abed8cc200c_jumbo");
  const DicomFromPng& unknown = image("2b327d8b7523701d3bfc55f6eaccbf_jumbo");
  EXPECT_FALSE(empty.viewPosition.has_value());
  EXPECT_FALSE(unknown.viewPosition.has_value());
  DicomFile f(unknown.path);
  ASSERT_TRUE(f.loaded());
  EXPECT_EQ(f.text(DCM_ViewPosition), "<absent>");
  DicomFile supine(image("aspiration-pneumonia-5-day0").path);
  ASSERT_TRUE(supine.loaded());
  EXPECT_EQ(supine.text(DCM_ViewPosition), "AP");
  EXPECT_EQ(supine.text(DCM_SeriesDescription), "CHEST AP Supine");
}

// Dates are 2020-01-01 + offset_days, so a patient's studies keep their order and spacing.
TEST_F(CovidToDicom, DatesAreValidAndFollowTheOffsets) {
  const CsvTable table = readCsvFile((kCovid / "manifest.csv").string());
  const auto imageColumn = table.column("image_id");
  const auto offsetColumn = table.column("offset_days");
  ASSERT_TRUE(imageColumn && offsetColumn);
  int checked = 0;
  for (const CsvRecord& r : table.records) {
    const std::string offset = r.fields[*offsetColumn];
    if (offset.empty() || offset == "?")
      continue;
    const DicomFromPng& w = image(r.fields[*imageColumn]);
    EXPECT_EQ(w.studyDate, baseDatePlus(std::stoi(offset))) << w.imageId;
    ++checked;
  }
  EXPECT_GT(checked, 150);
  EXPECT_LT(image("jkms-35-e79-g001-l-a").studyDate, image("jkms-35-e79-g001-l-b").studyDate);
  EXPECT_LT(image("jkms-35-e79-g001-l-b").studyDate, image("jkms-35-e79-g001-l-c").studyDate);
  for (const DicomFromPng& w : report_->written) {
    ASSERT_EQ(w.studyDate.size(), 8u);
    const int month = std::stoi(w.studyDate.substr(4, 2));
    const int day = std::stoi(w.studyDate.substr(6, 2));
    EXPECT_TRUE(month >= 1 && month <= 12 && day >= 1 && day <= 31) << w.studyDate;
  }
}

TEST_F(CovidToDicom, PixelsAreThePngsAndTheDecoderReadsThem) {
  for (const char* id : {"ARDSSevere", "covid-19-pneumonia-15-L", "665f7ed5dcf52f235d8abed8cc200c_jumbo"}) {
    const DicomFromPng& w = image(id);
    const fs::path png = kCovid / "images" / (std::string(id) + ".png");
    const Image source = readPng(png.string());
    DicomFile f(w.path);
    ASSERT_TRUE(f.loaded());
    EXPECT_EQ(f.text(DCM_Rows), std::to_string(source.height));
    EXPECT_EQ(f.text(DCM_Columns), std::to_string(source.width));
    EXPECT_EQ(f.pixels(), pngSamples(png)) << id;

    // comcl's own ingest decoder: decoded, the header facts the index uses, and the PNG's grey levels
    // (the window 128/256 shows the stored values unchanged).
    const DecodeResult decoded = decodeFile(w.path);
    ASSERT_EQ(decoded.outcome, DecodeOutcome::Decoded) << decoded.reason;
    EXPECT_EQ(decoded.metadata.patientId, std::optional<std::string>(w.patientId));
    EXPECT_EQ(decoded.metadata.studyInstanceUid, w.studyInstanceUid);
    EXPECT_EQ(decoded.metadata.studyDate, std::optional<std::string>(w.studyDate));
    EXPECT_EQ(decoded.metadata.viewPosition, w.viewPosition);
    EXPECT_EQ(decoded.metadata.bodyPart, std::optional<std::string>("CHEST"));
    EXPECT_EQ(decoded.report.windowSource, "header window");
    ASSERT_EQ(decoded.image.width, source.width);
    ASSERT_EQ(decoded.image.height, source.height);
    ASSERT_EQ(decoded.image.channels, 1);
    float worst = 0;
    for (std::size_t i = 0; i < source.pixels.size(); ++i)
      worst = std::max(worst, std::fabs(decoded.image.pixels[i] - source.pixels[i]));
    EXPECT_LT(worst, 1e-4f) << id;
  }
}

TEST_F(CovidToDicom, LabelsMergedPerStudy) {
  // The `labels` column: 14 findings; 20_dNA's two images are COVID-19 only, row 1 (5_dNA) is ARDS.
  const std::vector<StudyLabelRow> rows = studyLabelRows(*report_);
  std::map<std::string, std::map<std::string, int>> byStudy;
  for (const StudyLabelRow& row : rows)
    EXPECT_TRUE(byStudy.emplace(row.studyInstanceUid, row.labels).second) << "one row per study";
  const auto& covid20 = byStudy.at(image("covid-19-pneumonia-15-PA").studyInstanceUid);
  EXPECT_EQ(covid20.size(), 14u);
  EXPECT_EQ(covid20.at("COVID-19"), 1);
  EXPECT_EQ(covid20.at("ARDS"), 0);
  EXPECT_EQ(covid20.at("No Finding"), 0);
  EXPECT_EQ(byStudy.at(image("ARDSSevere").studyInstanceUid).at("ARDS"), 1);
  EXPECT_EQ(byStudy.at(image("ARDSSevere").studyInstanceUid).at("COVID-19"), 0);
  // Unlabelled rows (78 images, `unlabelled` in the manifest) give no study row.
  EXPECT_EQ(byStudy.count(image("665f7ed5dcf52f235d8abed8cc200c_jumbo").studyInstanceUid), 0u);

  const std::vector<StudyLabelRow> onlyCovid = studyLabelRows(*report_, {"COVID-19"});
  EXPECT_EQ(onlyCovid.size(), rows.size());
  for (const StudyLabelRow& row : onlyCovid) {
    ASSERT_EQ(row.labels.size(), 1u);
    EXPECT_EQ(row.labels.begin()->first, "COVID-19");
  }
}

TEST(PngToDicom, SameManifestTwiceGivesTheSameFiles) {
  if (!fs::exists(kCovid / "manifest.csv"))
    GTEST_SKIP() << "missing " << kCovid;
  TempDir dir;
  PngToDicomOptions options;
  options.limit = 6;
  options.outputDir = dir.file("a");
  const PngToDicomReport a = convertToDicom(kCovid.string(), options);
  options.outputDir = dir.file("b");
  const PngToDicomReport b = convertToDicom(kCovid.string(), options);
  EXPECT_EQ(a.considered, 6u);
  ASSERT_EQ(a.written.size(), 6u);
  ASSERT_EQ(b.written.size(), 6u);
  for (std::size_t i = 0; i < a.written.size(); ++i) {
    EXPECT_EQ(a.written[i].studyInstanceUid, b.written[i].studyInstanceUid);
    EXPECT_EQ(a.written[i].sopInstanceUid, b.written[i].sopInstanceUid);
    EXPECT_EQ(bytesOf(a.written[i].path), bytesOf(b.written[i].path)) << a.written[i].path;
  }
  // Another tag is another data set: other patients, other UIDs.
  options.outputDir = dir.file("c");
  options.datasetTag = "other";
  const PngToDicomReport c = convertToDicom(kCovid.string(), options);
  ASSERT_EQ(c.written.size(), 6u);
  EXPECT_EQ(c.written[0].patientId, "other-5");
  EXPECT_NE(c.written[0].studyInstanceUid, a.written[0].studyInstanceUid);
}

TEST(PngToDicom, NihRows) {
  if (!fs::exists(kNih / "manifest.csv"))
    GTEST_SKIP() << "missing " << kNih;
  TempDir dir;
  PngToDicomOptions options;
  options.outputDir = dir.file("out");
  options.limit = 6;
  const PngToDicomReport r = convertToDicom(kNih.string(), options);
  ASSERT_EQ(r.written.size(), 6u);
  EXPECT_TRUE(r.failures.empty());
  EXPECT_EQ(r.datasetTag, "nih");
  const DicomFromPng& first = r.written[0];
  DicomFile f(first.path);
  ASSERT_TRUE(f.loaded());
  EXPECT_EQ(f.text(DCM_PatientID), "nih-00000075");
  EXPECT_EQ(f.text(DCM_PatientSex), "F");
  EXPECT_EQ(f.text(DCM_PatientAge), "061Y");
  EXPECT_EQ(f.text(DCM_ViewPosition), "PA");
  EXPECT_EQ(f.text(DCM_StudyID), "00000075_000");
  EXPECT_EQ(f.text(DCM_StudyDate), baseDatePlus(0));
  EXPECT_NE(f.text(DCM_ImageComments).find("licence: NIH Clinical Center"), std::string::npos);
  EXPECT_EQ(f.pixels(), pngSamples(kNih / "images" / "00000075_000.png"));
  EXPECT_EQ(r.written[5].imageId, "00000284_000");
  EXPECT_EQ(r.written[5].studyDate, baseDatePlus(5));  // follow_up 5
  EXPECT_NE(r.written[0].studyInstanceUid, r.written[1].studyInstanceUid);

  // Labels from the label_* columns: 00000100_000 is Atelectasis, Effusion and Infiltration.
  const std::vector<StudyLabelRow> rows = studyLabelRows(r);
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[1].studyInstanceUid, r.written[1].studyInstanceUid);
  EXPECT_EQ(rows[1].labels.size(), 15u);
  int positives = 0;
  for (const auto& [finding, value] : rows[1].labels)
    positives += value;
  EXPECT_EQ(positives, 3);
  EXPECT_EQ(rows[1].labels.at("Atelectasis"), 1);
  EXPECT_EQ(rows[1].labels.at("Effusion"), 1);
  EXPECT_EQ(rows[1].labels.at("Infiltration"), 1);
  EXPECT_EQ(rows[1].labels.at("No Finding"), 0);
}

TEST(PngToDicom, BadRowsAreReportedAndTheOthersWritten) {
  if (!fs::exists(kNih / "manifest.csv"))
    GTEST_SKIP() << "missing " << kNih;
  TempDir dir;
  const std::string good = (kNih / "images" / "00000075_000.png").string();
  {
    std::ofstream text(dir.file("not-a-png.png"));
    text << "this is not a PNG\n";
  }
  writeManifest(dir, {"patient_id,image_id,study_id,file,view", "p1,img1,s1," + good + ",PA",
                      "p2,img2,s2,images/missing.png,PA", "p3,img3,s3,not-a-png.png,AP",
                      ",img4,s4," + good + ",PA", "p1,img1,s1," + good + ",PA", "p5,img5,s5," + good + ",L"});
  PngToDicomOptions options;
  options.outputDir = dir.file("out");
  options.datasetTag = "t";
  const PngToDicomReport r = convertToDicom(dir.path().string(), options);
  ASSERT_EQ(r.written.size(), 2u);
  EXPECT_EQ(r.written[0].imageId, "img1");
  EXPECT_EQ(r.written[1].imageId, "img5");
  EXPECT_EQ(r.written[1].viewPosition, std::optional<std::string>("LL"));
  ASSERT_EQ(r.failures.size(), 4u);
  EXPECT_EQ(r.failures[0].row, 2u);
  EXPECT_EQ(r.failures[0].imageId, "img2");
  EXPECT_NE(r.failures[0].reason.find("missing file"), std::string::npos) << r.failures[0].reason;
  EXPECT_NE(r.failures[0].reason.find("missing.png"), std::string::npos) << r.failures[0].reason;
  EXPECT_EQ(r.failures[1].row, 3u);
  EXPECT_NE(r.failures[1].reason.find("not-a-png.png"), std::string::npos) << r.failures[1].reason;
  EXPECT_EQ(r.failures[2].row, 4u);
  EXPECT_EQ(r.failures[2].reason, "empty patient_id");
  EXPECT_EQ(r.failures[3].row, 5u);
  EXPECT_NE(r.failures[3].reason.find("duplicate image_id"), std::string::npos) << r.failures[3].reason;
  EXPECT_FALSE(fs::exists(fs::path(dir.file("out")) / "t-p2"));
  EXPECT_FALSE(fs::exists(fs::path(dir.file("out")) / "t-p3" / "img3.dcm"));
}

TEST(PngToDicom, ManifestWithoutPatientIdIsAClearError) {
  TempDir dir;
  writeManifest(dir, {"image_id,file,view", "a,images/a.png,PA"});
  PngToDicomOptions options;
  options.outputDir = dir.file("out");
  try {
    convertToDicom(dir.path().string(), options);
    FAIL() << "no error";
  } catch (const ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("missing required column: patient_id"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

// StudyID and AccessionNumber are SH (16 characters): long study ids are shortened, stay apart and stay
// stable. Labels of one study's images are merged; uncertain labels are left out.
TEST(PngToDicom, LongStudyIdsAndMergedLabels) {
  if (!fs::exists(kNih / "manifest.csv"))
    GTEST_SKIP() << "missing " << kNih;
  TempDir dir;
  const std::string png = (kNih / "images" / "00000075_000.png").string();
  const std::string longA = "study-with-a-very-long-identifier-A";
  const std::string longB = "study-with-a-very-long-identifier-B";
  writeManifest(dir, {"patient_id,image_id,study_id,file,label_X,label_Y,label_Z",
                      "p,a1," + longA + "," + png + ",1,0,", "p,a2," + longA + "," + png + ",0,-1,0",
                      "p,b1," + longB + "," + png + ",-1,-1,", "q,c1,short," + png + ",0,1,-1"});
  PngToDicomOptions options;
  options.outputDir = dir.file("out");
  options.datasetTag = "t";
  const PngToDicomReport r = convertToDicom(dir.path().string(), options);
  ASSERT_EQ(r.written.size(), 4u);
  DicomFile a1(r.written[0].path), b1(r.written[2].path);
  ASSERT_TRUE(a1.loaded() && b1.loaded());
  const std::string idA = a1.text(DCM_StudyID);
  const std::string idB = b1.text(DCM_StudyID);
  EXPECT_EQ(idA.size(), 16u);
  EXPECT_EQ(idB.size(), 16u);
  EXPECT_NE(idA, idB);
  EXPECT_EQ(a1.text(DCM_AccessionNumber), idA);
  EXPECT_EQ(r.written[0].studyInstanceUid, r.written[1].studyInstanceUid);
  EXPECT_NE(r.written[0].studyInstanceUid, r.written[2].studyInstanceUid);
  EXPECT_NE(r.written[0].seriesInstanceUid, r.written[1].seriesInstanceUid);

  const std::vector<StudyLabelRow> rows = studyLabelRows(r);
  ASSERT_EQ(rows.size(), 2u);  // study B has only uncertain labels
  EXPECT_EQ(rows[0].studyInstanceUid, r.written[0].studyInstanceUid);
  EXPECT_EQ(rows[0].labels, (std::map<std::string, int>{{"X", 1}, {"Y", 0}, {"Z", 0}}));
  EXPECT_EQ(rows[1].labels, (std::map<std::string, int>{{"X", 0}, {"Y", 1}}));
  const std::vector<StudyLabelRow> onlyZ = studyLabelRows(r, {"Z"});
  ASSERT_EQ(onlyZ.size(), 1u);
  EXPECT_EQ(onlyZ[0].labels, (std::map<std::string, int>{{"Z", 0}}));
}

}  // namespace
}  // namespace comcl::imaging
