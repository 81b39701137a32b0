// PNG data sets with a manifest.csv into the index and cache; manifest labels onto DICOM-indexed rows.
#include "comcl/imaging/manifest_import.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "comcl/imaging/png.h"
#include "comcl/imaging/resize.h"
#include "comcl/storage/cache_key.h"
#include "temp_dir.h"

namespace comcl::imaging {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// --- CSV

TEST(Csv, QuotedCommasDoubledQuotesNewlinesAndCrlf) {
  const CsvTable t = parseCsv(
      "id,date,report\r\n"
      "1,\"January 25, 2020\",\"He said \"\"stable\"\", then left\"\r\n"
      "2,,\"first line\r\nsecond line\"\r\n"
      "3,2020,\"\"\r\n");
  ASSERT_EQ(t.header, (std::vector<std::string>{"id", "date", "report"}));
  ASSERT_TRUE(t.problems.empty());
  ASSERT_EQ(t.records.size(), 3u);
  EXPECT_EQ(t.records[0].fields,
            (std::vector<std::string>{"1", "January 25, 2020", "He said \"stable\", then left"}));
  EXPECT_EQ(t.records[1].fields, (std::vector<std::string>{"2", "", "first line\r\nsecond line"}));
  EXPECT_EQ(t.records[2].fields, (std::vector<std::string>{"3", "2020", ""}));
  // Rows count records; lines say where each starts (the second spans lines 3 and 4).
  EXPECT_EQ(t.records[1].row, 2u);
  EXPECT_EQ(t.records[1].line, 3u);
  EXPECT_EQ(t.records[2].row, 3u);
  EXPECT_EQ(t.records[2].line, 5u);
  EXPECT_EQ(t.column("report"), 2u);
  EXPECT_FALSE(t.column("missing").has_value());
}

TEST(Csv, LastRecordWithoutLineBreakBomAndBlankLines) {
  const CsvTable t = parseCsv("\xEF\xBB\xBF a , b\n\n1,2\n\n3,\"x\"");
  ASSERT_EQ(t.header, (std::vector<std::string>{"a", "b"}));
  ASSERT_EQ(t.records.size(), 2u);
  EXPECT_EQ(t.records[0].fields, (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(t.records[1].fields, (std::vector<std::string>{"3", "x"}));
  EXPECT_EQ(t.records[1].line, 5u);
  EXPECT_TRUE(t.problems.empty());
}

TEST(Csv, RaggedRowsAreReportedAndLeftOut) {
  const CsvTable t = parseCsv("a,b\n1,2\n3\n4,5,6\n7,8,\n9,10\n");
  ASSERT_EQ(t.records.size(), 2u);
  EXPECT_EQ(t.records[0].row, 1u);
  EXPECT_EQ(t.records[1].row, 5u);
  EXPECT_EQ(t.records[1].fields, (std::vector<std::string>{"9", "10"}));
  ASSERT_EQ(t.problems.size(), 3u);
  EXPECT_EQ(t.problems[0].row, 2u);
  EXPECT_EQ(t.problems[0].line, 3u);
  EXPECT_EQ(t.problems[0].message, "has 1 fields, the header has 2");
  EXPECT_EQ(t.problems[1].row, 3u);
  EXPECT_EQ(t.problems[2].row, 4u);  // a trailing comma is one more (empty) field
}

TEST(Csv, QuoteOpenAtTheEndIsAProblemAndStrayQuotesAreCharacters) {
  const CsvTable t = parseCsv("a,b\n5\"6,\"x\"y\n1,\"never closed\n2,3\n");
  ASSERT_EQ(t.records.size(), 1u);
  EXPECT_EQ(t.records[0].fields, (std::vector<std::string>{"5\"6", "xy"}));
  ASSERT_EQ(t.problems.size(), 1u);
  EXPECT_EQ(t.problems[0].row, 2u);
  EXPECT_EQ(t.problems[0].line, 3u);
  EXPECT_NE(t.problems[0].message.find("still open"), std::string::npos);
}

TEST(Csv, EmptyInputHasNoHeader) {
  EXPECT_TRUE(parseCsv("").header.empty());
  EXPECT_TRUE(parseCsv("\n\n").header.empty());
}

// --- labels

std::map<std::string, double> asMap(const std::vector<ManifestLabel>& labels) {
  std::map<std::string, double> m;
  for (const ManifestLabel& l : labels)
    m[l.finding] = l.value;
  return m;
}

TEST(ManifestLabels, LabelColumnsGiveZeroOneAndUncertainAndSkipEmptyCells) {
  const CsvTable t = parseCsv(
      "image_id,label_icu,label_death\n"
      "a,1,0\n"
      "b,0,\n"
      "c,-1,1.0\n"
      "d,yes,\n");
  const ManifestLabels l = extractLabels(t);
  EXPECT_EQ(l.findings, (std::vector<std::string>{"death", "icu"}));
  ASSERT_EQ(l.perRecord.size(), 4u);
  EXPECT_EQ(asMap(l.perRecord[0]), (std::map<std::string, double>{{"death", 0}, {"icu", 1}}));
  EXPECT_EQ(asMap(l.perRecord[1]), (std::map<std::string, double>{{"icu", 0}}));
  EXPECT_EQ(asMap(l.perRecord[2]), (std::map<std::string, double>{{"death", 1}, {"icu", -1}}));
  EXPECT_TRUE(l.perRecord[3].empty());
  ASSERT_EQ(l.warnings.size(), 1u);
  EXPECT_NE(l.warnings[0].find("row 4"), std::string::npos) << l.warnings[0];
  EXPECT_NE(l.warnings[0].find("label_icu 'yes'"), std::string::npos) << l.warnings[0];
}

TEST(ManifestLabels, LabelsColumnNamesEveryFindingAndLeavesUnlabelledRowsAlone) {
  const CsvTable t = parseCsv(
      "image_id,labels\n"
      "a,COVID-19|ARDS\n"
      "b,Pneumonia\n"
      "c,unlabelled\n"
      "d,\n"
      "e, ARDS | \n");
  const ManifestLabels l = extractLabels(t);
  EXPECT_EQ(l.findings, (std::vector<std::string>{"ARDS", "COVID-19", "Pneumonia"}));
  EXPECT_EQ(asMap(l.perRecord[0]),
            (std::map<std::string, double>{{"ARDS", 1}, {"COVID-19", 1}, {"Pneumonia", 0}}));
  EXPECT_EQ(asMap(l.perRecord[1]),
            (std::map<std::string, double>{{"ARDS", 0}, {"COVID-19", 0}, {"Pneumonia", 1}}));
  EXPECT_TRUE(l.perRecord[2].empty());
  EXPECT_TRUE(l.perRecord[3].empty());
  EXPECT_EQ(asMap(l.perRecord[4]),
            (std::map<std::string, double>{{"ARDS", 1}, {"COVID-19", 0}, {"Pneumonia", 0}}));
  EXPECT_TRUE(l.warnings.empty());
}

TEST(ManifestLabels, LabelColumnWinsOverTheLabelsColumnForItsFinding) {
  // As in the NIH subset: both forms; the explicit column decides (here they disagree on purpose).
  const CsvTable t = parseCsv(
      "image_id,labels,label_Mass\n"
      "a,Mass|Nodule,0\n"
      "b,Nodule,\n");
  const ManifestLabels l = extractLabels(t);
  EXPECT_EQ(l.findings, (std::vector<std::string>{"Mass", "Nodule"}));
  EXPECT_EQ(asMap(l.perRecord[0]), (std::map<std::string, double>{{"Mass", 0}, {"Nodule", 1}}));
  EXPECT_EQ(asMap(l.perRecord[1]), (std::map<std::string, double>{{"Nodule", 1}}));
  EXPECT_TRUE(hasLabelColumns(t));
  EXPECT_FALSE(hasLabelColumns(parseCsv("image_id,label_\nx,1\n")));
}

// --- import-manifest

// A grey gradient with a bright disc: enough structure for non-trivial quality metrics.
Image testImage(int width, int height, int channels, float phase = 0) {
  Image image(width, height, channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const float dx = x - width / 2.0f, dy = y - height / 2.0f;
      const float disc = dx * dx + dy * dy < (height / 4.0f) * (height / 4.0f) ? 0.4f : 0.0f;
      for (int c = 0; c < channels; ++c)
        image.at(x, y, c) = std::min(1.0f, 0.1f + 0.5f * x / width + disc + 0.1f * c + phase);
    }
  }
  return image;
}

void writeText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

class ManifestImportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(set_ / "images");
    writePng((set_ / "images/wide.png").string(), testImage(64, 32, 1), 8);
    writePng((set_ / "images/tall.png").string(), testImage(30, 60, 1, 0.05f), 16);
    writePng((set_ / "images/colour.png").string(), testImage(40, 40, 3), 8);
  }

  storage::InstanceRecord row(const std::string& imageId) {
    const auto r = index_.findInstance("manifest:set1/" + imageId);
    EXPECT_TRUE(r.has_value()) << imageId;
    return r.value_or(storage::InstanceRecord{});
  }
  std::map<std::string, double> labelsOf(const std::string& imageId) {
    std::map<std::string, double> m;
    for (const storage::LabelRecord& l : index_.labels("instance", "manifest:set1/" + imageId))
      m[l.finding] = l.value;
    return m;
  }

  static constexpr const char* kGoodManifest =
      "patient_id,image_id,study_id,file,view,modality,study_date,report,label_icu,labels\r\n"
      "p1,wide,s1,images/wide.png,ap supine,CR,20200401,\"Portable film, \"\"AP\"\"\nno "
      "change\",1,COVID-19\r\n"
      "p1,tall,s2,images/tall.png,?,CR,20200403,,0,COVID-19|ARDS\r\n"
      "p2,colour,s3,images/colour.png,,X-ray,,,,unlabelled";

  TempDir dir_;
  fs::path set_ = dir_.path() / "set1";
  storage::Index index_{dir_.file("index.sqlite")};
  storage::ImageCache cache_{dir_.file("images.bin"), storage::CacheFormat{32, 8}};
};

TEST_F(ManifestImportTest, RowsMetadataPixelsQualityAndLabels) {
  writeText(set_ / "manifest.csv", kGoodManifest);
  const ManifestImportReport r = importManifest(set_.string(), index_, cache_);
  EXPECT_TRUE(r.failures.empty()) << r.failures.front().reason;
  EXPECT_EQ(r.rows, 3u);
  EXPECT_EQ(r.imported, 3);
  EXPECT_EQ(r.unchanged, 0);
  EXPECT_EQ(r.replaced, 0);
  EXPECT_EQ(r.resourcePrefix, "manifest:set1/");
  EXPECT_EQ(r.labelSource, "manifest:" + (set_ / "manifest.csv").string());
  EXPECT_EQ(r.studyDateColumn.value_or(""), "study_date");
  EXPECT_EQ(r.images, 3);
  EXPECT_EQ(r.patients, 2);
  EXPECT_EQ(r.patientsWithSeveralImages, 1);
  EXPECT_EQ(r.studies, 3);
  EXPECT_EQ(r.views, (std::map<std::string, std::int64_t>{{"", 2}, {"AP SUPINE", 1}}));
  EXPECT_EQ(r.modalities, (std::map<std::string, std::int64_t>{{"CR", 2}, {"X-ray", 1}}));
  EXPECT_EQ(r.metadataIssues.at("missing ViewPosition"), 1);
  EXPECT_EQ(r.metadataIssues.at("unknown ViewPosition '?'"), 1);
  EXPECT_EQ(r.metadataIssues.at("missing StudyDate"), 1);
  EXPECT_EQ(r.labelledRows, 2);
  EXPECT_EQ(r.unlabelledRows, 1);
  EXPECT_EQ(r.labels.at("icu").positives, 1);
  EXPECT_EQ(r.labels.at("icu").negatives, 1);
  EXPECT_EQ(r.labels.at("COVID-19").positives, 2);
  EXPECT_EQ(r.labels.at("ARDS").positives, 1);
  EXPECT_EQ(r.labels.at("ARDS").negatives, 1);
  EXPECT_EQ(r.labelsWritten, 6);

  const storage::InstanceRecord wide = row("wide");
  EXPECT_EQ(wide.source, (set_ / "images/wide.png").string());
  EXPECT_EQ(wide.patientKey.value_or(""), "p1");
  EXPECT_EQ(wide.studyInstanceUid, "s1");
  EXPECT_EQ(wide.sopInstanceUid, "wide");
  EXPECT_EQ(wide.viewPosition.value_or(""), "AP SUPINE");
  EXPECT_EQ(wide.modality.value_or(""), "CR");
  EXPECT_EQ(wide.studyDate.value_or(""), "20200401");
  EXPECT_EQ(wide.decodeState, storage::DecodeState::Decoded);
  EXPECT_EQ(wide.cols, 64);
  EXPECT_EQ(wide.rows, 32);
  EXPECT_EQ(wide.bitsStored, 8);
  EXPECT_EQ(wide.metadataIssues, "");
  // 64 x 32 into a 32 square: 32 x 16, centred vertically.
  EXPECT_EQ(wide.contentX, 0);
  EXPECT_EQ(wide.contentY, 8);
  EXPECT_EQ(wide.contentWidth, 32);
  EXPECT_EQ(wide.contentHeight, 16);

  const storage::InstanceRecord tall = row("tall");
  EXPECT_FALSE(tall.viewPosition.has_value());
  EXPECT_EQ(tall.metadataIssues, "unknown ViewPosition '?'");
  EXPECT_EQ(tall.bitsStored, 16);
  EXPECT_EQ(tall.contentX, 8);
  EXPECT_EQ(tall.contentWidth, 16);
  EXPECT_EQ(tall.contentHeight, 32);

  const storage::InstanceRecord colour = row("colour");
  EXPECT_FALSE(colour.viewPosition.has_value());
  EXPECT_FALSE(colour.studyDate.has_value());
  EXPECT_EQ(colour.metadataIssues, "missing StudyDate; missing ViewPosition");
  EXPECT_EQ(colour.photometric, "RGB");
  EXPECT_EQ(colour.decodeReason, "PNG colour converted to luminance");

  // The cache holds the luminance, letterboxed as the DICOM path does it.
  for (const char* id : {"wide", "colour"}) {
    const storage::InstanceRecord rec = row(id);
    ASSERT_TRUE(rec.cacheSlot.has_value());
    std::vector<std::uint8_t> cached(cache_.imageBytes());
    cache_.read(*rec.cacheSlot, storage::cacheKey(rec.resourceId), cached.data());
    const Letterboxed expected = letterbox(toGrey(readPng(rec.source)), 32);
    EXPECT_EQ(cached, quantise(expected.image, 8)) << id;
    const auto quality = index_.quality(rec.id);
    ASSERT_TRUE(quality.has_value()) << id;
    EXPECT_TRUE(quality->flag.has_value());
    EXPECT_GT(quality->contrast, 0.0);
  }

  EXPECT_EQ(labelsOf("wide"), (std::map<std::string, double>{{"ARDS", 0}, {"COVID-19", 1}, {"icu", 1}}));
  EXPECT_EQ(labelsOf("tall"), (std::map<std::string, double>{{"ARDS", 1}, {"COVID-19", 1}, {"icu", 0}}));
  EXPECT_TRUE(labelsOf("colour").empty());
  EXPECT_EQ(index_.labels("instance", "manifest:set1/wide").front().source, r.labelSource);
}

TEST_F(ManifestImportTest, ReimportLeavesRowsAloneAndReplaceRewritesThem) {
  writeText(set_ / "manifest.csv", kGoodManifest);
  importManifest(set_.string(), index_, cache_);
  const storage::InstanceRecord before = row("wide");

  const ManifestImportReport again = importManifest(set_.string(), index_, cache_);
  EXPECT_EQ(again.imported, 0);
  EXPECT_EQ(again.unchanged, 3);
  EXPECT_EQ(again.replaced, 0);
  EXPECT_EQ(again.labelsWritten, 0);
  EXPECT_EQ(again.patients, 2);  // the summary still covers the rows already there
  EXPECT_EQ(again.labels.at("COVID-19").positives, 2);
  EXPECT_EQ(row("wide").cacheSlot, before.cacheSlot);
  EXPECT_EQ(index_.instanceCount(), 3);

  // A changed label in the manifest reaches the index even for unchanged rows.
  std::string edited = kGoodManifest;
  edited.replace(edited.find(",1,COVID-19"), 11, ",0,COVID-19");
  writeText(set_ / "manifest.csv", edited);
  const ManifestImportReport relabelled = importManifest(set_.string(), index_, cache_);
  EXPECT_EQ(relabelled.unchanged, 3);
  EXPECT_EQ(relabelled.labelsWritten, 1);
  EXPECT_EQ(labelsOf("wide").at("icu"), 0.0);

  ManifestImportOptions replace;
  replace.replaceExisting = true;
  const ManifestImportReport replaced = importManifest(set_.string(), index_, cache_, replace);
  EXPECT_EQ(replaced.replaced, 3);
  EXPECT_EQ(replaced.imported, 0);
  const storage::InstanceRecord after = row("wide");
  EXPECT_EQ(after.id, before.id);  // a replaced row keeps its id
  ASSERT_TRUE(after.cacheSlot.has_value());
  EXPECT_NE(after.cacheSlot, before.cacheSlot);
  std::vector<std::uint8_t> pixels(cache_.imageBytes());
  cache_.read(*after.cacheSlot, storage::cacheKey(after.resourceId), pixels.data());
  EXPECT_EQ(index_.instanceCount(), 3);
  EXPECT_EQ(index_.decodedInstances().size(), 3u);
}

TEST_F(ManifestImportTest, BadRowsAreReportedAndGoodRowsLand) {
  writeText(set_ / "images/text.png", "this is not a PNG");
  writeText(set_ / "manifest.csv",
            "patient_id,image_id,file,view\n"
            "p1,wide,images/wide.png,PA\n"               // row 1: good
            "p1,gone,images/gone.png,PA\n"               // row 2: missing file
            "p2,text,images/text.png,PA\n"               // row 3: not a PNG
            ",tall,images/tall.png,PA\n"                 // row 4: no patient
            "p3,wide,images/colour.png,PA\n"             // row 5: duplicate image_id
            "p3,short,images/colour.png\n"               // row 6: ragged
            "p3,colour,\"images/colour.png\",\"L\"\n");  // row 7: good
  const ManifestImportReport r = importManifest(set_.string(), index_, cache_);
  EXPECT_EQ(r.rows, 7u);
  EXPECT_EQ(r.imported, 2);
  ASSERT_EQ(r.failures.size(), 5u);
  EXPECT_EQ(r.failures[0].row, 2u);
  EXPECT_EQ(r.failures[0].line, 3u);
  EXPECT_EQ(r.failures[0].imageId, "gone");
  EXPECT_NE(r.failures[0].reason.find("missing file"), std::string::npos) << r.failures[0].reason;
  EXPECT_EQ(r.failures[1].row, 3u);
  EXPECT_NE(r.failures[1].reason.find("not a PNG"), std::string::npos) << r.failures[1].reason;
  EXPECT_EQ(r.failures[2].row, 4u);
  EXPECT_EQ(r.failures[2].reason, "empty patient_id");
  EXPECT_EQ(r.failures[3].row, 5u);
  EXPECT_EQ(r.failures[3].reason, "duplicate image_id (first in row 1)");
  EXPECT_EQ(r.failures[4].row, 6u);
  EXPECT_EQ(r.failures[4].reason, "has 3 fields, the header has 4");
  EXPECT_EQ(index_.instanceCount(), 2);
  EXPECT_EQ(row("wide").viewPosition.value_or(""), "PA");
  EXPECT_EQ(row("colour").viewPosition.value_or(""), "L");
  EXPECT_FALSE(index_.findInstance("manifest:set1/text").has_value());
  // No slot was leaked by the rows that failed: the next slot handed out follows the two in use.
  EXPECT_EQ(index_.reserveCacheSlot(), 2);
}

TEST_F(ManifestImportTest, MissingManifestOrColumnsIsAManifestError) {
  EXPECT_THROW(importManifest(set_.string(), index_, cache_), ManifestError);
  writeText(set_ / "manifest.csv", "image_id,view\nwide,PA\n");
  try {
    readManifest(set_.string());
    FAIL() << "expected a ManifestError";
  } catch (const ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("missing required columns: patient_id, file"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(index_.instanceCount(), 0);
}

TEST_F(ManifestImportTest, FolderNameWithTrailingSlashOrDotGivesTheSameIds) {
  writeText(set_ / "manifest.csv", kGoodManifest);
  importManifest(set_.string() + "/", index_, cache_);
  EXPECT_TRUE(index_.findInstance("manifest:set1/wide").has_value());
  const ManifestImportReport again = importManifest((set_ / ".").string(), index_, cache_);
  EXPECT_EQ(again.unchanged, 3);
}

// --- import-labels

class LabelImportTest : public ::testing::Test {
 protected:
  // A decoded row as `comcl index` would write it for a DICOM file at `source`.
  void addRow(const std::string& resourceId, const std::string& source) {
    storage::InstanceRecord r;
    r.resourceId = resourceId;
    r.source = source;
    r.decodeState = storage::DecodeState::Decoded;
    r.cacheSlot = index_.reserveCacheSlot();
    index_.upsertInstance(r);
  }

  TempDir dir_;
  storage::Index index_{dir_.file("index.sqlite")};
};

TEST_F(LabelImportTest, MatchesSourcesByWholeTrailingComponents) {
  addRow("id-a", "/archive/mhh/dicom/p1/a.dcm");
  addRow("id-b", "/archive/mhh/dicom/p1/b.dcm");
  addRow("id-xa", "/archive/mhh/dicom/p1/xa.dcm");
  addRow("id-c", "/elsewhere/p2/c.dcm");
  const std::string manifest = dir_.file("manifest.csv");
  writeText(manifest,
            "image_id,file,dicom_file,label_icu_ever,label_death\n"
            "a,images/a.png,dicom/p1/a.dcm,1,0\n"
            "b,images/b.png,dicom/p1/b.dcm,0,\n"
            "c,images/c.png,dicom/p2/c.dcm,1,1\n"    // the index has p2/c.dcm, but not under dicom/
            "d,images/d.png,dicom/p1/d.dcm,1,1\n");  // nothing indexed
  const LabelImportReport r = importLabels(manifest, index_);
  EXPECT_EQ(r.matchColumn, "dicom_file");
  EXPECT_EQ(r.rows, 4u);
  EXPECT_EQ(r.matchedRows, 2);
  EXPECT_EQ(r.instancesLabelled, 2);
  ASSERT_EQ(r.failures.size(), 2u);
  EXPECT_EQ(r.failures[0].row, 3u);
  EXPECT_EQ(r.failures[0].imageId, "c");
  EXPECT_EQ(r.failures[0].reason, "no decoded image in the index comes from dicom/p2/c.dcm");
  EXPECT_EQ(r.failures[1].row, 4u);
  EXPECT_EQ(r.labels.at("icu_ever").positives, 1);
  EXPECT_EQ(r.labels.at("icu_ever").negatives, 1);
  EXPECT_EQ(r.labels.at("death").negatives, 1);
  EXPECT_EQ(r.labelsWritten, 3);

  const auto a = index_.labels("instance", "id-a");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].finding, "death");
  EXPECT_EQ(a[0].value, 0.0);
  EXPECT_EQ(a[1].finding, "icu_ever");
  EXPECT_EQ(a[1].value, 1.0);
  EXPECT_EQ(a[1].source, "manifest:" + manifest);
  EXPECT_TRUE(index_.labels("instance", "id-xa").empty());
  EXPECT_TRUE(index_.labels("instance", "id-c").empty());

  EXPECT_EQ(importLabels(manifest, index_).labelsWritten, 0);  // idempotent
}

TEST_F(LabelImportTest, MatchColumnAndLabelColumnsAreRequired) {
  const std::string manifest = dir_.file("manifest.csv");
  writeText(manifest, "image_id,label_x\na,1\n");
  EXPECT_THROW(importLabels(manifest, index_), ManifestError);  // neither dicom_file nor file
  writeText(manifest, "image_id,file\na,a.png\n");
  EXPECT_THROW(importLabels(manifest, index_), ManifestError);  // no label columns
  EXPECT_THROW(importLabels(dir_.file("absent.csv"), index_), ManifestError);

  addRow("id-a", "/set/images/a.png");
  writeText(manifest, "image_id,file,dicom_file,labels\na,images/a.png,dicom/a.dcm,Mass\n");
  LabelImportOptions byFile;
  byFile.matchColumn = "file";
  const LabelImportReport r = importLabels(manifest, index_, byFile);
  EXPECT_EQ(r.matchedRows, 1);
  EXPECT_EQ(index_.labels("instance", "id-a").size(), 1u);
}

// --- the real PNG data set

TEST(ManifestImportRealData, CovidChestXraySubset) {
  const fs::path folder = fs::path(COMCL_SHARED_DATA) / "covid_chestxray_subset";
  if (!fs::exists(folder / "manifest.csv"))
    GTEST_SKIP() << "missing " << folder;
  TempDir dir;
  storage::Index index(dir.file("index.sqlite"));
  storage::ImageCache cache(dir.file("images.bin"), storage::CacheFormat{256, 8});
  const ManifestImportReport r = importManifest(folder.string(), index, cache);

  // Expected numbers from reading manifest.csv with Python's csv module.
  EXPECT_TRUE(r.failures.empty()) << r.failures.front().reason;
  EXPECT_EQ(r.rows, 292u);
  EXPECT_EQ(r.imported, 292);
  EXPECT_EQ(r.images, 292);
  EXPECT_EQ(r.patients, 146);
  EXPECT_EQ(r.patientsWithSeveralImages, 77);
  EXPECT_EQ(r.studies, 232);
  EXPECT_FALSE(r.studyDateColumn.has_value());  // "date" holds "2020", "January 25, 2020", "03/09/20", ...
  // Views: 35 empty and 4 "?" are missing; "AP Supine" is upper-cased.
  EXPECT_EQ(r.views, (std::map<std::string, std::int64_t>{
                         {"", 39}, {"AP", 44}, {"AP SUPINE", 28}, {"L", 42}, {"PA", 139}}));
  EXPECT_EQ(r.modalities, (std::map<std::string, std::int64_t>{{"X-ray", 292}}));
  EXPECT_EQ(r.metadataIssues.at("missing ViewPosition"), 35);
  EXPECT_EQ(r.metadataIssues.at("unknown ViewPosition '?'"), 4);
  std::int64_t flagged = 0;
  for (const auto& [flag, n] : r.qualityFlags) {
    EXPECT_FALSE(flag.empty());
    flagged += n;
  }
  EXPECT_EQ(flagged, 292);

  // `labels` is '|'-separated; 78 rows say "unlabelled". 214 labelled rows, 14 findings.
  EXPECT_EQ(r.unlabelledRows, 78);
  EXPECT_EQ(r.labelledRows, 214);
  const std::map<std::string, std::pair<int, int>> expected = {
      {"ARDS", {13, 201}},          {"Bacterial", {4, 210}},     {"COVID-19", {126, 88}},
      {"E.Coli", {4, 210}},         {"Influenza", {2, 212}},     {"Klebsiella", {8, 206}},
      {"Legionella", {4, 210}},     {"Lipoid", {5, 209}},        {"Mycoplasma Bacterial Pneumonia", {8, 206}},
      {"No Finding", {4, 210}},     {"Pneumocystis", {16, 198}}, {"Pneumonia", {11, 203}},
      {"Streptococcus", {13, 201}}, {"Varicella", {5, 209}},
  };
  ASSERT_EQ(r.labels.size(), expected.size());
  for (const auto& [finding, counts] : expected) {
    ASSERT_EQ(r.labels.count(finding), 1u) << finding;
    EXPECT_EQ(r.labels.at(finding).positives, counts.first) << finding;
    EXPECT_EQ(r.labels.at(finding).negatives, counts.second) << finding;
  }
  EXPECT_EQ(r.labelsWritten, 214 * 14);
  EXPECT_EQ(index.allLabels().size(), 214u * 14u);
  EXPECT_EQ(index.decodedInstances().size(), 292u);

  const auto ards = index.findInstance("manifest:covid_chestxray_subset/ARDSSevere");
  ASSERT_TRUE(ards.has_value());
  EXPECT_EQ(ards->patientKey.value_or(""), "5");
  EXPECT_EQ(ards->studyInstanceUid, "5_dNA");
  EXPECT_EQ(ards->cols, 321);
  EXPECT_EQ(ards->rows, 256);
  EXPECT_EQ(ards->contentWidth, 256);
  EXPECT_EQ(ards->contentHeight, 204);  // round(256 * 256 / 321)
}

}  // namespace
}  // namespace comcl::imaging
