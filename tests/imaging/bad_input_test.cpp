// Every kind of bad input gives an outcome and a clear one-line reason; nothing throws or crashes.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <cstring>

#include "comcl/imaging/decode.h"
#include "test_dicom.h"

namespace comcl::imaging {
namespace {

using testing::makeImage;
using testing::makeNonImage;
using testing::TestImageSpec;
using testing::toBytes;

DecodeResult decodeBytes(const std::vector<char>& bytes) {
  return decodeBuffer(bytes.data(), bytes.size());
}

void expectReason(const DecodeResult& r, DecodeOutcome outcome, const std::string& fragment) {
  EXPECT_EQ(r.outcome, outcome) << r.reason;
  EXPECT_NE(r.reason.find(fragment), std::string::npos) << "reason was: " << r.reason;
  EXPECT_EQ(r.reason.find('\n'), std::string::npos) << "reason must be one line";
  EXPECT_TRUE(r.image.empty());
}

std::vector<char> validImageBytes() {
  TestImageSpec spec;
  spec.rows = 64;
  spec.cols = 64;
  return toBytes(*makeImage(spec));
}

TEST(BadInput, EmptyFile) {
  expectReason(decodeBytes({}), DecodeOutcome::Failed, "empty file");
}

TEST(BadInput, NonDicomText) {
  const std::string text = "PatientID,View\nP1,PA\nthis is a CSV file, not DICOM\n";
  expectReason(decodeBytes(std::vector<char>(text.begin(), text.end())), DecodeOutcome::Failed,
               "not a DICOM file");
}

TEST(BadInput, NonDicomBinaryWithADicomLookingPreambleGap) {
  std::vector<char> png = {'\x89', 'P', 'N', 'G', '\r', '\n', '\x1a', '\n'};
  png.resize(4096, '\x07');
  expectReason(decodeBytes(png), DecodeOutcome::Failed, "not a DICOM file");
}

TEST(BadInput, TruncatedAtEveryQuarter) {
  const std::vector<char> bytes = validImageBytes();
  for (std::size_t cut : {bytes.size() / 4, bytes.size() / 2, bytes.size() * 3 / 4, bytes.size() - 1}) {
    std::vector<char> truncated(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut));
    expectReason(decodeBytes(truncated), DecodeOutcome::Failed, "truncated");
  }
}

TEST(BadInput, TruncatedInsideTheMetaHeader) {
  const std::vector<char> bytes = validImageBytes();
  expectReason(decodeBytes(std::vector<char>(bytes.begin(), bytes.begin() + 150)), DecodeOutcome::Failed,
               "truncated");
}

TEST(BadInput, ImageObjectWithoutPixelData) {
  TestImageSpec spec;
  spec.withPixelData = false;
  expectReason(decodeBytes(toBytes(*makeImage(spec))), DecodeOutcome::Failed, "no pixel data");
}

TEST(BadInput, NonImageObjectsAreSkippedWithTheirClass) {
  const std::pair<const char*, const char*> objects[] = {
      {UID_BasicTextSRStorage, "Basic Text SR"},
      {UID_EnhancedSRStorage, "Enhanced SR"},
      {UID_EncapsulatedPDFStorage, "Encapsulated PDF"},
      {UID_GrayscaleSoftcopyPresentationStateStorage, "Presentation State"},
      {UID_KeyObjectSelectionDocumentStorage, "Key Object"},
  };
  for (const auto& [uid, name] : objects) {
    DecodeResult r = decodeBytes(toBytes(*makeNonImage(uid)));
    expectReason(r, DecodeOutcome::Skipped, "not an image");
    EXPECT_NE(r.reason.find(uid), std::string::npos) << r.reason;
    EXPECT_EQ(r.metadata.sopClassUid, uid);
    EXPECT_FALSE(r.metadata.patientId.value_or("").empty()) << "metadata is still read for " << name;
  }
}

TEST(BadInput, ZeroSizedImage) {
  TestImageSpec spec;
  auto file = makeImage(spec);
  file->getDataset()->putAndInsertUint16(DCM_Rows, 0);
  expectReason(decodeBytes(toBytes(*file)), DecodeOutcome::Failed, "zero-sized image");
}

TEST(BadInput, AbsurdDimensions) {
  TestImageSpec spec;
  auto file = makeImage(spec);
  file->getDataset()->putAndInsertUint16(DCM_Rows, 65535);
  file->getDataset()->putAndInsertUint16(DCM_Columns, 65535);
  expectReason(decodeBytes(toBytes(*file)), DecodeOutcome::Failed,
               "absurd dimensions 65535x65535");  // default

  // A film within the limit is not refused as absurd (it fails later, for its missing pixels).
  file->getDataset()->putAndInsertUint16(DCM_Rows, 4000);
  file->getDataset()->putAndInsertUint16(DCM_Columns, 4000);
  const DecodeResult large = decodeBytes(toBytes(*file));
  EXPECT_EQ(large.reason.find("absurd"), std::string::npos) << large.reason;

  DecodeOptions strict;
  strict.maxPixels = 1000;
  const std::vector<char> small = toBytes(*makeImage(spec));
  expectReason(decodeBuffer(small.data(), small.size(), strict), DecodeOutcome::Failed,
               "(limit 1000 pixels)");
}

TEST(BadInput, DimensionsLargerThanThePixelData) {
  TestImageSpec spec;
  auto file = makeImage(spec);
  file->getDataset()->putAndInsertUint16(DCM_Rows, 4000);
  expectReason(decodeBytes(toBytes(*file)), DecodeOutcome::Failed, "pixel data too short");
}

TEST(BadInput, BitsStoredLargerThanBitsAllocated) {
  TestImageSpec spec;
  auto file = makeImage(spec);
  file->getDataset()->putAndInsertUint16(DCM_BitsStored, 20);
  expectReason(decodeBytes(toBytes(*file)), DecodeOutcome::Failed, "BitsStored (20)");
}

TEST(BadInput, UnknownTransferSyntax) {
  std::vector<char> bytes = validImageBytes();
  // Replace the explicit little endian UID in the meta header with an unknown UID of the same length.
  const std::string known = "1.2.840.10008.1.2.1";
  const std::string unknown = "1.2.840.99999.9.9.9";
  auto at = std::search(bytes.begin(), bytes.end(), known.begin(), known.end());
  ASSERT_NE(at, bytes.end());
  std::copy(unknown.begin(), unknown.end(), at);
  DecodeResult r = decodeBytes(bytes);
  expectReason(r, DecodeOutcome::Unsupported, "unknown transfer syntax 1.2.840.99999.9.9.9");
}

TEST(BadInput, MissingPhotometricInterpretation) {
  TestImageSpec spec;
  auto file = makeImage(spec);
  file->getDataset()->findAndDeleteElement(DCM_PhotometricInterpretation);
  expectReason(decodeBytes(toBytes(*file)), DecodeOutcome::Failed, "PhotometricInterpretation");
}

TEST(BadInput, MissingFileIsAnOutcomeNotAnException) {
  DecodeResult r = decodeFile("/nonexistent/comcl/file.dcm");
  expectReason(r, DecodeOutcome::Failed, "cannot open");
}

}  // namespace
}  // namespace comcl::imaging
