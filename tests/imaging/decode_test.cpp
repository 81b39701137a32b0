// Decoding and normalisation on DICOM objects built in the test with known pixel values.
#include "comcl/imaging/decode.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "test_dicom.h"

namespace comcl::imaging {
namespace {

using testing::makeImage;
using testing::TestImageSpec;
using testing::toBytes;

DecodeResult decodeSpec(const TestImageSpec& spec, E_TransferSyntax xfer = EXS_LittleEndianExplicit,
                        DecodeOptions options = {}) {
  auto file = makeImage(spec);
  std::vector<char> bytes = toBytes(*file, xfer);
  return decodeBuffer(bytes.data(), bytes.size(), options);
}

// Linear VOI window of PS3.3 C.11.2.1.2.1, mapped to [0, 1].
double expectedWindow(double value, double center, double width) {
  const double t = (value - (center - 0.5)) / (width - 1) + 0.5;
  return std::clamp(t, 0.0, 1.0);
}

TEST(Decode, AppliesTheHeaderWindowToMonochrome2) {
  TestImageSpec spec;
  spec.windowCenter = 2048;
  spec.windowWidth = 2000;
  DecodeResult r = decodeSpec(spec);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  EXPECT_EQ(r.report.windowSource, "header window");
  EXPECT_DOUBLE_EQ(r.report.windowCenter, 2048);
  EXPECT_DOUBLE_EQ(r.report.windowWidth, 2000);
  EXPECT_FALSE(r.report.inverted);
  ASSERT_EQ(r.image.width, spec.cols);
  ASSERT_EQ(r.image.height, spec.rows);
  for (int x = 0; x < spec.cols; ++x) {
    const double stored = 4095.0 * x / (spec.cols - 1);
    EXPECT_NEAR(r.image.at(x, 5), expectedWindow(stored, 2048, 2000), 2e-3) << "x=" << x;
  }
}

TEST(Decode, InvertsMonochrome1SoThatDenseIsBright) {
  TestImageSpec spec;
  spec.windowCenter = 2048;
  spec.windowWidth = 4096;
  DecodeResult mono2 = decodeSpec(spec);
  spec.photometric = "MONOCHROME1";
  DecodeResult mono1 = decodeSpec(spec);
  ASSERT_EQ(mono1.outcome, DecodeOutcome::Decoded) << mono1.reason;
  EXPECT_TRUE(mono1.report.inverted);
  for (int x = 0; x < spec.cols; x += 3) {
    EXPECT_NEAR(mono1.image.at(x, 0), 1.0f - mono2.image.at(x, 0), 2e-3);
  }
  EXPECT_GT(mono1.image.at(0, 0), 0.95f);  // the lowest stored value is the brightest in MONOCHROME1
}

TEST(Decode, AppliesRescaleBeforeTheWindow) {
  // Signed stored values s with slope 2 and intercept 1024 give modality values 2s + 1024, equal to the
  // unsigned ramp v stored without rescale; both must render the same.
  TestImageSpec plain;
  plain.windowCenter = 2048;
  plain.windowWidth = 3000;
  auto ramp = [&](int x) -> long { return 2 * (2047L * x / (plain.cols - 1)); };
  plain.value = [&](int x, int, int, int) -> long { return ramp(x); };
  TestImageSpec rescaled = plain;
  rescaled.isSigned = true;
  rescaled.bitsStored = 16;
  rescaled.rescaleSlope = 2;
  rescaled.rescaleIntercept = 1024;
  rescaled.value = [&](int x, int, int, int) -> long { return (ramp(x) - 1024) / 2; };  // -512..1535
  DecodeResult a = decodeSpec(plain);
  DecodeResult b = decodeSpec(rescaled);
  ASSERT_EQ(a.outcome, DecodeOutcome::Decoded) << a.reason;
  ASSERT_EQ(b.outcome, DecodeOutcome::Decoded) << b.reason;
  EXPECT_DOUBLE_EQ(b.report.rescaleSlope, 2);
  EXPECT_DOUBLE_EQ(b.report.rescaleIntercept, 1024);
  for (int x = 0; x < plain.cols; ++x) {
    EXPECT_NEAR(b.image.at(x, 3), expectedWindow(static_cast<double>(ramp(x)), 2048, 3000), 2e-3)
        << "x=" << x;
    EXPECT_NEAR(a.image.at(x, 3), b.image.at(x, 3), 2e-3) << "x=" << x;
  }
}

TEST(Decode, FallsBackToARobustPercentileWindow) {
  TestImageSpec spec;  // no window in the header
  spec.rows = 100;
  spec.cols = 100;
  // A smooth ramp over 1000..2000 plus a few extreme outliers that a min-max window would follow.
  spec.value = [](int x, int y, int, int) -> long {
    if (y == 0 && x < 3)
      return 4095;
    if (y == 99 && x > 96)
      return 0;
    return 1000 + 10 * x;
  };
  DecodeResult r = decodeSpec(spec);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  EXPECT_EQ(r.report.windowSource, "percentile window");
  // The ramp spans (nearly) the full output range although the outliers extend the stored range 4x.
  EXPECT_LT(r.image.at(2, 50), 0.1f);
  EXPECT_GT(r.image.at(97, 50), 0.9f);
  EXPECT_GT(r.report.windowWidth, 800);
  EXPECT_LT(r.report.windowWidth, 1300);
}

TEST(Decode, Reads8BitImages) {
  TestImageSpec spec;
  spec.bitsAllocated = 8;
  spec.bitsStored = 8;
  spec.windowCenter = 127.5;
  spec.windowWidth = 256;
  DecodeResult r = decodeSpec(spec);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  for (int x = 0; x < spec.cols; ++x) {
    const double stored = 255.0 * x / (spec.cols - 1);
    EXPECT_NEAR(r.image.at(x, 0), expectedWindow(static_cast<long>(stored), 127.5, 256), 2e-3) << "x=" << x;
  }
}

TEST(Decode, KeepsColourOrConvertsItToLuminance) {
  TestImageSpec spec;
  spec.bitsAllocated = 8;
  spec.bitsStored = 8;
  spec.samplesPerPixel = 3;
  spec.photometric = "RGB";
  spec.value = [](int, int, int, int s) -> long { return s == 0 ? 200 : (s == 1 ? 100 : 50); };
  DecodeResult colour = decodeSpec(spec);
  ASSERT_EQ(colour.outcome, DecodeOutcome::Decoded) << colour.reason;
  ASSERT_EQ(colour.image.channels, 3);
  EXPECT_NEAR(colour.image.at(4, 4, 0), 200 / 255.0f, 1e-3);
  EXPECT_NEAR(colour.image.at(4, 4, 1), 100 / 255.0f, 1e-3);
  EXPECT_NEAR(colour.image.at(4, 4, 2), 50 / 255.0f, 1e-3);

  DecodeOptions grey;
  grey.keepColour = false;
  DecodeResult luminance = decodeSpec(spec, EXS_LittleEndianExplicit, grey);
  ASSERT_EQ(luminance.image.channels, 1);
  EXPECT_NEAR(luminance.image.at(4, 4), (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255.0, 2e-3);
}

TEST(Decode, ConvertsYbrFullToRgb) {
  TestImageSpec spec;
  spec.bitsAllocated = 8;
  spec.bitsStored = 8;
  spec.samplesPerPixel = 3;
  spec.photometric = "YBR_FULL";
  // Pure red in YCbCr (full range): Y=76, Cb=85, Cr=255.
  spec.value = [](int, int, int, int s) -> long { return s == 0 ? 76 : (s == 1 ? 85 : 255); };
  DecodeResult r = decodeSpec(spec);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  ASSERT_EQ(r.image.channels, 3);
  EXPECT_GT(r.image.at(1, 1, 0), 0.95f);
  EXPECT_LT(r.image.at(1, 1, 1), 0.05f);
  EXPECT_LT(r.image.at(1, 1, 2), 0.05f);
}

TEST(Decode, UsesTheFirstFrameOfAMultiFrameImageAndSaysSo) {
  TestImageSpec spec;
  spec.frames = 3;
  spec.windowCenter = 2048;
  spec.windowWidth = 4096;
  spec.value = [](int, int, int frame, int) -> long { return frame == 0 ? 500 : 3500; };
  DecodeResult r = decodeSpec(spec);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  EXPECT_EQ(r.report.framesInFile, 3);
  EXPECT_NE(r.reason.find("frame 1 of 3"), std::string::npos) << r.reason;
  EXPECT_NEAR(r.image.at(3, 3), expectedWindow(500, 2048, 4096), 2e-3);
}

TEST(Decode, LetterboxesToTheRequestedSize) {
  TestImageSpec spec;  // 32 wide, 40 high
  spec.windowCenter = 2048;
  spec.windowWidth = 4096;
  spec.value = [](int, int, int, int) -> long { return 4095; };
  DecodeOptions options;
  options.size = 20;
  DecodeResult r = decodeSpec(spec, EXS_LittleEndianExplicit, options);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  EXPECT_EQ(r.image.width, 20);
  EXPECT_EQ(r.image.height, 20);
  EXPECT_EQ(r.report.content.height, 20);
  EXPECT_EQ(r.report.content.width, 16);
  EXPECT_EQ(r.report.content.x, 2);
  EXPECT_NEAR(r.image.at(0, 10), 0.0f, 1e-6);   // padding
  EXPECT_NEAR(r.image.at(10, 10), 1.0f, 1e-3);  // content
}

TEST(Decode, ReportsMissingMetadataButStillDecodes) {
  TestImageSpec spec;
  spec.withPatientId = false;
  spec.withStudyUid = false;
  spec.withViewPosition = false;
  DecodeResult r = decodeSpec(spec);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  const auto& missing = r.metadata.missing;
  for (const char* tag : {"PatientID", "StudyInstanceUID", "ViewPosition"}) {
    EXPECT_NE(std::find(missing.begin(), missing.end(), tag), missing.end()) << tag;
  }
  EXPECT_FALSE(r.metadata.patientId.has_value());
}

TEST(Decode, ReadsTheIndexedMetadata) {
  TestImageSpec spec;
  DecodeResult r = decodeSpec(spec);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  EXPECT_EQ(r.metadata.patientId.value_or(""), "TEST-PATIENT");
  EXPECT_EQ(r.metadata.viewPosition.value_or(""), "PA");
  EXPECT_EQ(r.metadata.modality.value_or(""), "CR");
  EXPECT_EQ(r.metadata.bodyPart.value_or(""), "CHEST");
  EXPECT_EQ(r.metadata.studyDate.value_or(""), "20240102");
  EXPECT_EQ(r.metadata.sopClassUid, UID_ComputedRadiographyImageStorage);
  EXPECT_FALSE(r.metadata.studyInstanceUid.empty());
  EXPECT_TRUE(r.metadata.missing.empty());
  EXPECT_EQ(r.metadata.rows, spec.rows);
  EXPECT_EQ(r.metadata.cols, spec.cols);
  EXPECT_EQ(r.metadata.bitsStored, 12);
}

// Every transfer syntax DCMTK can decode gives the pixels of the uncompressed original.
class TransferSyntaxTest : public ::testing::TestWithParam<E_TransferSyntax> {};

TEST_P(TransferSyntaxTest, DecodesLikeTheUncompressedOriginal) {
  TestImageSpec spec;
  spec.windowCenter = 2048;
  spec.windowWidth = 4096;
  spec.value = [](int x, int y, int, int) -> long { return (x * 97 + y * 31) % 4096; };
  DecodeResult reference = decodeSpec(spec);
  DecodeResult r = decodeSpec(spec, GetParam());
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  EXPECT_EQ(r.metadata.transferSyntaxUid, DcmXfer(GetParam()).getXferID());
  ASSERT_EQ(r.image.pixels.size(), reference.image.pixels.size());
  for (std::size_t i = 0; i < r.image.pixels.size(); ++i) {
    ASSERT_NEAR(r.image.pixels[i], reference.image.pixels[i], 1e-6) << "pixel " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Lossless, TransferSyntaxTest,
                         ::testing::Values(EXS_LittleEndianImplicit, EXS_LittleEndianExplicit,
                                           EXS_BigEndianExplicit, EXS_DeflatedLittleEndianExplicit,
                                           EXS_JPEGProcess14SV1, EXS_JPEGProcess14, EXS_JPEGLSLossless,
                                           EXS_RLELossless));

TEST(Decode, DecodesLossyJpegBaselineCloseToTheOriginal) {
  TestImageSpec spec;
  spec.bitsAllocated = 8;
  spec.bitsStored = 8;
  spec.rows = 64;
  spec.cols = 64;
  spec.windowCenter = 127.5;
  spec.windowWidth = 256;
  spec.value = [](int x, int y, int, int) -> long { return 40 + (x + y) * 80 / 64; };
  DecodeResult reference = decodeSpec(spec);
  DecodeResult r = decodeSpec(spec, EXS_JPEGProcess1);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  double error = 0;
  for (std::size_t i = 0; i < r.image.pixels.size(); ++i) {
    error += std::abs(r.image.pixels[i] - reference.image.pixels[i]);
  }
  EXPECT_LT(error / r.image.pixels.size(), 0.02);
}

}  // namespace
}  // namespace comcl::imaging

namespace comcl::imaging {
namespace {

double maxDifference(const Image& a, const Image& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(a.pixels[i] - b.pixels[i])));
  }
  return worst;
}

// The lookup-table path must render exactly what DCMTK's general renderer renders (up to its 16-bit output).
TEST(Decode, LookupTablePathMatchesDcmtkRenderer) {
  struct Case {
    const char* name;
    TestImageSpec spec;
    E_TransferSyntax xfer;
  };
  auto windowed = [](TestImageSpec s) {
    s.windowCenter = 1500;
    s.windowWidth = 2500;
    s.value = [](int x, int y, int, int) -> long { return (x * 131 + y * 17) % 4096; };
    return s;
  };
  TestImageSpec mono1 = windowed({});
  mono1.photometric = "MONOCHROME1";
  TestImageSpec rescaled = windowed({});
  rescaled.isSigned = true;
  rescaled.bitsStored = 16;
  rescaled.rescaleSlope = 2;
  rescaled.rescaleIntercept = 1024;
  rescaled.value = [](int x, int y, int, int) -> long { return (x * 131 + y * 17) % 2048 - 1024; };
  TestImageSpec eight = windowed({});
  eight.bitsAllocated = 8;
  eight.bitsStored = 8;
  eight.windowCenter = 100;
  eight.windowWidth = 120;
  eight.value = [](int x, int y, int, int) -> long { return (x * 13 + y * 7) % 256; };
  const Case cases[] = {
      {"mono2", windowed({}), EXS_LittleEndianExplicit},
      {"mono1", mono1, EXS_LittleEndianExplicit},
      {"signed+rescale", rescaled, EXS_LittleEndianExplicit},
      {"8-bit", eight, EXS_LittleEndianExplicit},
      {"big endian", windowed({}), EXS_BigEndianExplicit},
      {"jpeg lossless", windowed({}), EXS_JPEGProcess14SV1},
      {"rle", mono1, EXS_RLELossless},
  };
  DecodeOptions general;
  general.forceDcmtkRenderer = true;
  for (const Case& c : cases) {
    DecodeResult fast = decodeSpec(c.spec, c.xfer);
    DecodeResult reference = decodeSpec(c.spec, c.xfer, general);
    ASSERT_EQ(fast.outcome, DecodeOutcome::Decoded) << c.name << ": " << fast.reason;
    ASSERT_EQ(reference.outcome, DecodeOutcome::Decoded) << c.name << ": " << reference.reason;
    EXPECT_EQ(fast.report.windowSource, reference.report.windowSource) << c.name;
    EXPECT_EQ(fast.report.inverted, reference.report.inverted) << c.name;
    EXPECT_LT(maxDifference(fast.image, reference.image), 2e-3) << c.name;
  }
}

TEST(Decode, LookupTablePathMatchesDcmtkOnTheRealMonochrome1Film) {
  const std::string rg1 = std::string(COMCL_SHARED_DATA) + "/dicom_samples/RG1_CR_chest_PA_uncompressed.dcm";
  DecodeOptions general;
  general.forceDcmtkRenderer = true;
  DecodeResult fast = decodeFile(rg1);
  DecodeResult reference = decodeFile(rg1, general);
  if (reference.outcome == DecodeOutcome::Failed && reference.reason.find("cannot open") == 0) {
    GTEST_SKIP() << "missing " << rg1;
  }
  ASSERT_EQ(fast.outcome, DecodeOutcome::Decoded) << fast.reason;
  ASSERT_EQ(reference.outcome, DecodeOutcome::Decoded) << reference.reason;
  EXPECT_LT(maxDifference(fast.image, reference.image), 2e-3);
}

TEST(Decode, SigmoidVoiFunctionFollowsTheStandard) {
  TestImageSpec spec;
  spec.windowCenter = 2048;
  spec.windowWidth = 1000;
  auto file = makeImage(spec);
  file->getDataset()->putAndInsertString(DCM_VOILUTFunction, "SIGMOID");
  std::vector<char> bytes = toBytes(*file);
  DecodeResult r = decodeBuffer(bytes.data(), bytes.size());
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  EXPECT_EQ(r.report.windowSource, "header window (SIGMOID)");
  for (int x = 0; x < spec.cols; x += 5) {
    const double stored = 4095.0 * x / (spec.cols - 1);
    const double expected = 1.0 / (1.0 + std::exp(-4.0 * (static_cast<long>(stored) - 2048.0) / 1000.0));
    EXPECT_NEAR(r.image.at(x, 0), expected, 1e-4) << "x=" << x;  // PS3.3 C.11.2.1.3.1
  }
}

}  // namespace
}  // namespace comcl::imaging
