// The ingest step: decode -> cache -> index row -> quality, on real and built DICOM objects.
#include "comcl/imaging/ingest.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "comcl/storage/cache_key.h"
#include "test_dicom.h"

namespace comcl::imaging {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

const fs::path kMhhFile = fs::path(COMCL_SHARED_DATA) / "mhh_covid_cxr/dicom/024e7871/fff13f3a.dcm";

TEST(OrthancId, MatchesTheIdOrthancGaveARealInstance) {
  // Orthanc 1.10.1 answered POST /instances for kMhhFile with this ID.
  EXPECT_EQ(orthancInstanceId("024e7871", "2.25.108836628660859187827393497308042011800",
                              "2.25.229210213928276410606486240053332048715",
                              "2.25.89100974200657463625242167417276686712"),
            "18f8c405-03ca58af-9bc8f4f2-42df3fe2-e88a19e6");
}

TEST(OrthancId, Sha1OfKnownInput) {
  EXPECT_EQ(sha1Hex("abc", 3), "a9993e364706816aba3e25717850c26c9cd0d89d");  // FIPS 180-1 test vector
}

class IngestTest : public ::testing::Test {
 protected:
  TempDir dir_;
  storage::Index index_{dir_.file("index.sqlite")};
  storage::ImageCache cache_{dir_.file("images.bin"), storage::CacheFormat{64, 8}};
};

TEST_F(IngestTest, RealImageGetsARowAVerifiedCacheSlotAndQuality) {
  if (!fs::exists(kMhhFile))
    GTEST_SKIP() << "missing " << kMhhFile;
  Ingestor ingestor(index_, cache_);
  IngestOutcome o = ingestor.ingestFile(kMhhFile.string());
  ASSERT_EQ(o.state, storage::DecodeState::Decoded) << o.reason;
  EXPECT_EQ(o.resourceId, "18f8c405-03ca58af-9bc8f4f2-42df3fe2-e88a19e6");

  auto row = index_.findInstance(o.resourceId);
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(row->patientKey.value_or(""), "024e7871");
  EXPECT_EQ(row->viewPosition.value_or(""), "PA");
  EXPECT_EQ(row->source, kMhhFile.string());
  ASSERT_TRUE(row->cacheSlot.has_value());
  EXPECT_EQ(std::max(row->contentWidth, row->contentHeight), 64);

  // The cached pixels are the decoded, letterboxed, quantised image.
  std::vector<std::uint8_t> cached(cache_.imageBytes());
  cache_.read(*row->cacheSlot, storage::cacheKey(o.resourceId), cached.data());
  DecodeOptions options;
  options.size = 64;
  options.keepColour = false;
  EXPECT_EQ(cached, quantise(decodeFile(kMhhFile.string(), options).image, 8));

  auto quality = index_.quality(o.instanceId);
  ASSERT_TRUE(quality.has_value());
  EXPECT_GT(quality->sharpness, 0);
  EXPECT_GT(quality->contrast, 0.05);
}

TEST_F(IngestTest, SecondIngestLeavesTheRowUnlessReplacing) {
  auto bytes = testing::toBytes(*testing::makeImage({}));
  Ingestor keep(index_, cache_);
  IngestOutcome first = keep.ingest(bytes.data(), bytes.size(), "a.dcm");
  IngestOutcome again = keep.ingest(bytes.data(), bytes.size(), "a.dcm");
  EXPECT_FALSE(first.alreadyIndexed);
  EXPECT_TRUE(again.alreadyIndexed);
  EXPECT_EQ(again.instanceId, first.instanceId);
  const auto slotBefore = index_.findInstance(first.resourceId)->cacheSlot;

  IngestOptions replace;
  replace.replaceExisting = true;
  Ingestor replacing(index_, cache_, replace);
  IngestOutcome replaced = replacing.ingest(bytes.data(), bytes.size(), "a.dcm");
  EXPECT_TRUE(replaced.replaced);
  const auto slotAfter = index_.findInstance(first.resourceId)->cacheSlot;
  ASSERT_TRUE(slotAfter.has_value());
  EXPECT_NE(slotAfter, slotBefore) << "a referenced slot must never be overwritten";
  EXPECT_EQ(index_.instanceCount(), 1);
}

TEST_F(IngestTest, ADecodableCopyReplacesAnUndecodableOneButNotTheReverse) {
  testing::TestImageSpec spec;
  auto file = testing::makeImage(spec);
  auto good = testing::toBytes(*file);
  file->getDataset()->putAndInsertUint16(DCM_BitsStored, 20);  // same UIDs, undecodable
  auto bad = testing::toBytes(*file);
  Ingestor ingestor(index_, cache_);

  IngestOutcome first = ingestor.ingest(bad.data(), bad.size(), "bad.dcm");
  ASSERT_EQ(first.state, storage::DecodeState::Failed);
  IngestOutcome second = ingestor.ingest(good.data(), good.size(), "good.dcm");
  EXPECT_EQ(second.resourceId, first.resourceId);
  EXPECT_TRUE(second.replaced);
  EXPECT_EQ(index_.findInstance(first.resourceId)->decodeState, storage::DecodeState::Decoded);

  IngestOutcome third = ingestor.ingest(bad.data(), bad.size(), "bad.dcm");
  EXPECT_TRUE(third.alreadyIndexed);
  auto row = index_.findInstance(first.resourceId);
  EXPECT_EQ(row->decodeState, storage::DecodeState::Decoded);
  EXPECT_EQ(row->source, "good.dcm");
}

TEST_F(IngestTest, BadInputIsRecordedWithItsReasonAndNoCacheSlot) {
  Ingestor ingestor(index_, cache_);
  const std::string text = "not a dicom file";
  IngestOutcome o = ingestor.ingest(text.data(), text.size(), "notes.txt");
  EXPECT_EQ(o.state, storage::DecodeState::Failed);
  EXPECT_EQ(o.resourceId.rfind("sha1:", 0), 0u);
  auto row = index_.findInstance(o.resourceId);
  ASSERT_TRUE(row.has_value());
  EXPECT_NE(row->decodeReason.find("not a DICOM file"), std::string::npos) << row->decodeReason;
  EXPECT_FALSE(row->cacheSlot.has_value());
  EXPECT_FALSE(index_.quality(o.instanceId).has_value());

  auto sr = testing::toBytes(*testing::makeNonImage("1.2.840.10008.5.1.4.1.1.88.11"));
  IngestOutcome skipped = ingestor.ingest(sr.data(), sr.size(), "report.dcm");
  EXPECT_EQ(skipped.state, storage::DecodeState::Skipped);
  EXPECT_EQ(skipped.resourceId.size(), 44u) << "UIDs present: Orthanc-style id";
}

// A colour cache (fundus photographs) keeps an RGB image's colour and stores a grey film in all three
// channels; the grey cache of the other tests stores colour as luminance.
TEST(IngestColour, AColourCacheKeepsRgbAndRepeatsGrey) {
  TempDir dir;
  storage::Index index(dir.file("index.sqlite"));
  storage::ImageCache cache(dir.file("images.bin"), storage::CacheFormat{16, 8, 3});
  Ingestor ingestor(index, cache);
  testing::TestImageSpec rgb;
  rgb.rows = rgb.cols = 16;
  rgb.bitsAllocated = rgb.bitsStored = 8;
  rgb.samplesPerPixel = 3;
  rgb.photometric = "RGB";
  rgb.value = [](int, int, int, int s) -> long { return s == 0 ? 200 : (s == 1 ? 100 : 50); };
  const auto colourBytes = testing::toBytes(*testing::makeImage(rgb));
  const IngestOutcome colour = ingestor.ingest(colourBytes.data(), colourBytes.size(), "fundus.dcm");
  ASSERT_EQ(colour.state, storage::DecodeState::Decoded) << colour.reason;
  std::vector<std::uint8_t> cached(cache.imageBytes());
  cache.read(*index.findInstance(colour.resourceId)->cacheSlot, storage::cacheKey(colour.resourceId),
             cached.data());
  EXPECT_EQ(cached[3 * (8 * 16 + 8)], 200);  // the centre pixel's R, G, B
  EXPECT_EQ(cached[3 * (8 * 16 + 8) + 1], 100);
  EXPECT_EQ(cached[3 * (8 * 16 + 8) + 2], 50);

  testing::TestImageSpec film;
  film.rows = film.cols = 16;
  const auto filmBytes = testing::toBytes(*testing::makeImage(film));
  const IngestOutcome grey = ingestor.ingest(filmBytes.data(), filmBytes.size(), "film.dcm");
  ASSERT_EQ(grey.state, storage::DecodeState::Decoded) << grey.reason;
  cache.read(*index.findInstance(grey.resourceId)->cacheSlot, storage::cacheKey(grey.resourceId),
             cached.data());
  for (std::size_t pixel = 0; pixel < 256; pixel += 17) {
    EXPECT_EQ(cached[3 * pixel], cached[3 * pixel + 1]) << pixel;
    EXPECT_EQ(cached[3 * pixel], cached[3 * pixel + 2]) << pixel;
  }
}

TEST_F(IngestTest, MissingMetadataIsRecorded) {
  testing::TestImageSpec spec;
  spec.withPatientId = false;
  spec.withViewPosition = false;
  auto bytes = testing::toBytes(*testing::makeImage(spec));
  Ingestor ingestor(index_, cache_);
  IngestOutcome o = ingestor.ingest(bytes.data(), bytes.size(), "x.dcm");
  ASSERT_EQ(o.state, storage::DecodeState::Decoded) << o.reason;
  auto row = index_.findInstance(o.resourceId);
  EXPECT_FALSE(row->patientKey.has_value());
  EXPECT_NE(row->metadataIssues.find("missing PatientID"), std::string::npos) << row->metadataIssues;
  EXPECT_NE(row->metadataIssues.find("missing ViewPosition"), std::string::npos) << row->metadataIssues;
}

}  // namespace
}  // namespace comcl::imaging
