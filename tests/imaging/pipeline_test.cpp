// End to end through the imaging module: a synthetic archive with ground truth and its clean twin (same
// seed, no degradations: the same anatomy, image for image) -> ingest (decode, normalise, cache, index) ->
// quality metrics that move the right way for every degradation.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "comcl/imaging/ingest.h"
#include "comcl/imaging/synth.h"
#include "test_dicom.h"

namespace comcl::imaging {
namespace {

struct Measured {
  SynthImage truth;
  storage::InstanceRecord row;
  storage::QualityRecord quality;
};

std::vector<Measured> ingestArchive(const SynthOptions& options, const std::string& dbDir) {
  const std::vector<SynthImage> truth = writeSyntheticArchive(options);
  storage::Index index(dbDir + "/index.sqlite");
  storage::ImageCache cache(dbDir + "/images.bin", storage::CacheFormat{128, 8});
  Ingestor ingestor(index, cache);
  std::vector<Measured> measured;
  for (const SynthImage& image : truth) {
    const IngestOutcome o = ingestor.ingestFile(options.outputDir + "/" + image.file);
    Measured m{image, *index.findInstance(o.resourceId), {}};
    if (auto q = index.quality(o.instanceId))
      m.quality = *q;
    measured.push_back(std::move(m));
  }
  return measured;
}

class PipelineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    SynthOptions options;
    options.patients = 10;
    options.studiesPerPatient = 3;
    options.size = 256;
    options.degradedFraction = 0.6;
    options.encodings = {Encoding::Mono2Uint16,       Encoding::Mono1Uint16,  Encoding::Mono2Uint8,
                         Encoding::Mono2Int16Rescale, Encoding::JpegLossless, Encoding::Rle};
    options.seed = 11;
    options.outputDir = dir_->file("degraded");
    degraded_ = new std::vector<Measured>(ingestArchive(options, makeDir("db-degraded")));
    options.outputDir = dir_->file("clean");
    options.degradedFraction = 0.0;
    clean_ = new std::vector<Measured>(ingestArchive(options, makeDir("db-clean")));
  }
  static void TearDownTestSuite() {
    delete degraded_;
    delete clean_;
    delete dir_;
  }
  static std::string makeDir(const std::string& name) {
    const std::string path = dir_->file(name);
    std::filesystem::create_directories(path);
    return path;
  }
  // Each degraded image with its clean twin.
  static std::vector<std::pair<const Measured*, const Measured*>> pairs(Degradation d) {
    std::vector<std::pair<const Measured*, const Measured*>> out;
    for (std::size_t i = 0; i < degraded_->size(); ++i) {
      if ((*degraded_)[i].truth.degradation == d)
        out.emplace_back(&(*degraded_)[i], &(*clean_)[i]);
    }
    return out;
  }

  static testing::TempDir* dir_;
  static std::vector<Measured>* degraded_;
  static std::vector<Measured>* clean_;
};

testing::TempDir* PipelineTest::dir_ = nullptr;
std::vector<Measured>* PipelineTest::degraded_ = nullptr;
std::vector<Measured>* PipelineTest::clean_ = nullptr;

TEST_F(PipelineTest, EveryFileIsIndexedWithItsGroundTruthMetadata) {
  ASSERT_EQ(degraded_->size(), clean_->size());
  for (Degradation d : {Degradation::Blur, Degradation::Noise, Degradation::Underexposed,
                        Degradation::Overexposed, Degradation::LowResolution, Degradation::JpegArtefacts}) {
    EXPECT_FALSE(pairs(d).empty()) << "the archive should contain " << toString(d);
  }
  for (std::size_t i = 0; i < degraded_->size(); ++i) {
    const Measured& m = (*degraded_)[i];
    SCOPED_TRACE(m.truth.file);
    ASSERT_EQ(m.row.decodeState, storage::DecodeState::Decoded) << m.row.decodeReason;
    EXPECT_EQ(m.row.patientKey.value_or(""), m.truth.patientId);
    EXPECT_EQ(m.row.studyInstanceUid, m.truth.studyInstanceUid);
    EXPECT_EQ(m.row.viewPosition.value_or(""), m.truth.view);
    EXPECT_EQ(m.row.rows, m.truth.rows);
    EXPECT_EQ(m.row.cols, m.truth.cols);
    EXPECT_EQ(m.row.transferSyntaxUid, m.truth.transferSyntaxUid);
    EXPECT_EQ((*clean_)[i].truth.view, m.truth.view) << "twins show the same view";
  }
}

TEST_F(PipelineTest, BlurAndLowResolutionLoseSharpness) {
  for (auto [degraded, clean] : pairs(Degradation::Blur)) {
    EXPECT_LT(degraded->quality.sharpness, 0.5 * clean->quality.sharpness) << degraded->truth.file;
  }
  for (auto [degraded, clean] : pairs(Degradation::LowResolution)) {
    EXPECT_LT(degraded->quality.sharpness, 0.5 * clean->quality.sharpness) << degraded->truth.file;
    EXPECT_EQ(degraded->row.rows * 4, clean->row.rows);
  }
}

TEST_F(PipelineTest, NoiseAndUnderexposureRaiseTheNoise) {
  for (auto [degraded, clean] : pairs(Degradation::Noise)) {
    EXPECT_GT(degraded->quality.noise, 2 * clean->quality.noise) << degraded->truth.file;
  }
  for (auto [degraded, clean] : pairs(Degradation::Underexposed)) {
    EXPECT_GT(degraded->quality.noise, 2 * clean->quality.noise) << degraded->truth.file;
    EXPECT_LT(degraded->quality.dynamicRange, clean->quality.dynamicRange) << degraded->truth.file;
  }
}

TEST_F(PipelineTest, OverexposureBurnsTheLungsOutToBlack) {
  for (auto [degraded, clean] : pairs(Degradation::Overexposed)) {
    EXPECT_GT(degraded->quality.clipLow, clean->quality.clipLow + 0.05) << degraded->truth.file;
    EXPECT_LT(degraded->quality.meanIntensity, clean->quality.meanIntensity) << degraded->truth.file;
  }
}

TEST_F(PipelineTest, LossyJpegFilmsAreStoredAsJpegBaseline) {
  for (auto [degraded, clean] : pairs(Degradation::JpegArtefacts)) {
    EXPECT_EQ(degraded->row.transferSyntaxUid, "1.2.840.10008.1.2.4.50");
    EXPECT_NE(clean->row.transferSyntaxUid, "1.2.840.10008.1.2.4.50");
  }
}

}  // namespace
}  // namespace comcl::imaging
