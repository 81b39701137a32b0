// The fallback decoder for pixel data DCMTK cannot decode (JPEG 2000, ...): its stored values get exactly
// the rendering uncompressed pixels would get, its failures become outcomes, and it is asked only when
// DCMTK has no decoder. Synthetic "JPEG 2000" files carry a junk code stream that only the test's fallback
// decodes, by handing over the stored values of the same image written uncompressed.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcpixseq.h>
#include <dcmtk/dcmdata/dcpxitem.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "comcl/imaging/decode.h"
#include "comcl/imaging/ingest.h"
#include "comcl/storage/cache_key.h"
#include "test_dicom.h"

namespace comcl::imaging {
namespace {

namespace fs = std::filesystem;
using Kind = ExternalFrame::Kind;

const fs::path kSamples = fs::path(COMCL_SHARED_DATA) / "dicom_samples";
const fs::path kJ2k = kSamples / "RG1_J2KI_CR_chest_PA.dcm";
const fs::path kUncompressed = kSamples / "RG1_CR_chest_PA_uncompressed.dcm";

std::unique_ptr<DcmFileFormat> parse(const std::vector<char>& bytes) {
  DcmInputBufferStream stream;
  stream.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  stream.setEos();
  auto file = std::make_unique<DcmFileFormat>();
  file->transferInit();
  const OFCondition status = file->read(stream);
  file->transferEnd();
  if (status.bad())
    throw std::runtime_error(std::string("test file does not parse: ") + status.text());
  return file;
}

// The stored values of frame 1 of an uncompressed file, as a decoder would hand them over, each row
// followed by `padding` bytes of junk.
ExternalFrame storedFrame(const std::vector<char>& uncompressed, Kind kind, std::size_t padding = 0) {
  auto file = parse(uncompressed);
  DcmDataset& ds = *file->getDataset();
  Uint16 rows = 0, cols = 0;
  ds.findAndGetUint16(DCM_Rows, rows);
  ds.findAndGetUint16(DCM_Columns, cols);
  const std::size_t pixelBytes = kind == Kind::Rgb24 ? 3 : (kind == Kind::Grey8 ? 1 : 2);
  const std::size_t rowBytes = cols * pixelBytes;
  const std::uint8_t* samples = nullptr;
  if (pixelBytes == 2) {
    const Uint16* words = nullptr;
    if (ds.findAndGetUint16Array(DCM_PixelData, words).bad())
      throw std::runtime_error("no 16-bit pixel data");
    samples = reinterpret_cast<const std::uint8_t*>(words);
  } else {
    const Uint8* bytes = nullptr;
    if (ds.findAndGetUint8Array(DCM_PixelData, bytes).bad())
      throw std::runtime_error("no 8-bit pixel data");
    samples = bytes;
  }
  ExternalFrame frame;
  frame.kind = kind;
  frame.width = cols;
  frame.height = rows;
  frame.pitch = rowBytes + padding;
  frame.bytes.assign(frame.pitch * rows, 0xEE);
  for (std::size_t y = 0; y < rows; ++y)
    std::memcpy(frame.bytes.data() + y * frame.pitch, samples + y * rowBytes, rowBytes);
  return frame;
}

// Replaces the pixel data by an encapsulated junk code stream and writes the file as JPEG 2000: DCMTK
// cannot decode it, and nothing could, except a fallback that knows the real pixels.
std::vector<char> asJpeg2000(DcmFileFormat& file) {
  DcmDataset& ds = *file.getDataset();
  delete ds.remove(DCM_PixelData);
  auto* sequence = new DcmPixelSequence(DcmTag(DCM_PixelData, EVR_OB));
  sequence->insert(new DcmPixelItem(DcmTag(DCM_Item, EVR_OB)));  // empty basic offset table
  auto* fragment = new DcmPixelItem(DcmTag(DCM_Item, EVR_OB));
  const std::vector<Uint8> junk(64, 0xAB);
  fragment->putUint8Array(junk.data(), static_cast<unsigned long>(junk.size()));
  sequence->insert(fragment);
  auto* pixelData = new DcmPixelData(DCM_PixelData);
  pixelData->putOriginalRepresentation(EXS_JPEG2000LosslessOnly, nullptr, sequence);
  ds.insert(pixelData, true);
  testing::TempDir dir;
  const std::string path = dir.file("j2k.dcm");
  const OFCondition status = file.saveFile(path.c_str(), EXS_JPEG2000LosslessOnly);
  if (status.bad())
    throw std::runtime_error(std::string("cannot write the JPEG 2000 test file: ") + status.text());
  return testing::readFileBytes(path);
}

// A synthetic image written uncompressed and as "JPEG 2000", with the same header and UIDs.
struct Pair {
  std::vector<char> uncompressed;
  std::vector<char> j2k;
};
Pair makePair(const testing::TestImageSpec& spec) {
  auto file = testing::makeImage(spec);
  Pair pair;
  pair.uncompressed = testing::toBytes(*file);
  pair.j2k = asJpeg2000(*file);
  return pair;
}

// A fallback that hands over `frame` and counts its calls.
struct CountingFallback {
  std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
  FallbackDecoder decoder(std::optional<ExternalFrame> frame) const {
    auto counter = calls;
    return [counter, frame](const void*, std::size_t, const DicomMetadata&) {
      ++*counter;
      return frame;
    };
  }
};

::testing::AssertionResult sameImage(const Image& a, const Image& b) {
  if (a.width != b.width || a.height != b.height || a.channels != b.channels) {
    return ::testing::AssertionFailure() << a.width << "x" << a.height << "x" << a.channels << " vs "
                                         << b.width << "x" << b.height << "x" << b.channels;
  }
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    if (a.pixels[i] != b.pixels[i])
      return ::testing::AssertionFailure() << "sample " << i << ": " << a.pixels[i] << " vs " << b.pixels[i];
  }
  return ::testing::AssertionSuccess();
}

void expectSameDecode(const DecodeResult& fallback, const DecodeResult& reference) {
  ASSERT_EQ(fallback.outcome, DecodeOutcome::Decoded) << fallback.reason;
  ASSERT_EQ(reference.outcome, DecodeOutcome::Decoded) << reference.reason;
  EXPECT_EQ(fallback.report.decoder, "fallback");
  EXPECT_TRUE(sameImage(fallback.image, reference.image));
  EXPECT_EQ(fallback.report.windowSource, reference.report.windowSource);
  EXPECT_EQ(fallback.report.windowCenter, reference.report.windowCenter);
  EXPECT_EQ(fallback.report.windowWidth, reference.report.windowWidth);
  EXPECT_EQ(fallback.report.inverted, reference.report.inverted);
  EXPECT_EQ(fallback.report.rescaleSlope, reference.report.rescaleSlope);
  EXPECT_EQ(fallback.report.rescaleIntercept, reference.report.rescaleIntercept);
  EXPECT_EQ(fallback.report.content.x, reference.report.content.x);
  EXPECT_EQ(fallback.report.content.y, reference.report.content.y);
  EXPECT_EQ(fallback.report.content.width, reference.report.content.width);
  EXPECT_EQ(fallback.report.content.height, reference.report.content.height);
  EXPECT_NE(fallback.reason.find("decoded by the fallback decoder: JPEG 2000"), std::string::npos)
      << fallback.reason;
}

// Decodes the pair both ways with the same options and compares.
void expectFallbackMatches(const testing::TestImageSpec& spec, Kind kind, DecodeOptions options = {}) {
  const Pair pair = makePair(spec);
  CountingFallback fallback;
  options.fallback = fallback.decoder(storedFrame(pair.uncompressed, kind));
  const DecodeResult viaFallback = decodeBuffer(pair.j2k.data(), pair.j2k.size(), options);
  options.fallback = nullptr;
  const DecodeResult reference = decodeBuffer(pair.uncompressed.data(), pair.uncompressed.size(), options);
  expectSameDecode(viaFallback, reference);
  EXPECT_EQ(*fallback.calls, 1);
}

// --- Real data: the JPEG 2000 chest film and its uncompressed copy ---

TEST(FallbackDecode, Jpeg2000FilmDecodesExactlyLikeItsUncompressedCopy) {
  if (!fs::exists(kJ2k) || !fs::exists(kUncompressed))
    GTEST_SKIP() << "missing " << kJ2k << " or " << kUncompressed;
  const std::vector<char> j2k = testing::readFileBytes(kJ2k.string());
  const ExternalFrame frame = storedFrame(testing::readFileBytes(kUncompressed.string()), Kind::Grey16);
  for (const int size : {256, 0}) {
    SCOPED_TRACE("size " + std::to_string(size));
    DecodeOptions options;
    options.size = size;
    std::size_t seenSize = 0;
    DicomMetadata seenHeader;
    options.fallback = [&](const void* data, std::size_t bytes, const DicomMetadata& header) {
      EXPECT_EQ(std::memcmp(data, j2k.data(), j2k.size()), 0);
      seenSize = bytes;
      seenHeader = header;
      return std::optional<ExternalFrame>(frame);
    };
    const DecodeResult viaFallback = decodeFile(kJ2k.string(), options);
    EXPECT_EQ(seenSize, j2k.size());
    EXPECT_EQ(seenHeader.transferSyntaxUid, "1.2.840.10008.1.2.4.91");
    EXPECT_EQ(seenHeader.rows, 1955);
    EXPECT_EQ(seenHeader.cols, 1841);

    options.fallback = nullptr;
    const DecodeResult reference = decodeFile(kUncompressed.string(), options);
    EXPECT_EQ(reference.report.decoder, "lut");
    expectSameDecode(viaFallback, reference);
    EXPECT_EQ(viaFallback.image.width, size > 0 ? size : 1841);
    EXPECT_TRUE(viaFallback.report.inverted);  // MONOCHROME1
    EXPECT_EQ(viaFallback.report.windowSource, "header window");
    // The header describes the file, not the frame handed over.
    EXPECT_EQ(viaFallback.metadata.transferSyntaxUid, "1.2.840.10008.1.2.4.91");
    EXPECT_EQ(viaFallback.metadata.bitsStored, 15);
  }
}

TEST(FallbackDecode, Jpeg2000FilmStaysUnsupportedWhenTheFallbackCannotDecodeIt) {
  if (!fs::exists(kJ2k))
    GTEST_SKIP() << "missing " << kJ2k;
  CountingFallback fallback;
  DecodeOptions options;
  options.fallback = fallback.decoder(std::nullopt);
  const DecodeResult r = decodeFile(kJ2k.string(), options);
  EXPECT_EQ(r.outcome, DecodeOutcome::Unsupported);
  EXPECT_NE(r.reason.find("JPEG 2000"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("1.2.840.10008.1.2.4.91"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("fallback decoder could not decode it"), std::string::npos) << r.reason;
  EXPECT_EQ(r.metadata.rows, 1955);
  EXPECT_EQ(*fallback.calls, 1);
}

TEST(FallbackDecode, IsNotCalledForFilesDcmtkDecodes) {
  CountingFallback fallback;
  DecodeOptions options;
  options.fallback = fallback.decoder(std::nullopt);
  if (fs::exists(kUncompressed)) {
    const DecodeResult r = decodeFile(kUncompressed.string(), options);
    EXPECT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
    EXPECT_EQ(r.report.decoder, "lut");
  }
  auto file = testing::makeImage({});
  for (const E_TransferSyntax xfer : {EXS_LittleEndianExplicit, EXS_LittleEndianImplicit, EXS_RLELossless,
                                      EXS_JPEGProcess14SV1, EXS_JPEGLSLossless}) {
    const std::vector<char> bytes = testing::toBytes(*file, xfer);
    const DecodeResult r = decodeBuffer(bytes.data(), bytes.size(), options);
    EXPECT_EQ(r.outcome, DecodeOutcome::Decoded) << DcmXfer(xfer).getXferName() << ": " << r.reason;
    EXPECT_EQ(r.report.decoder, "lut") << DcmXfer(xfer).getXferName();
    EXPECT_EQ(r.reason, "") << DcmXfer(xfer).getXferName();
  }
  options.forceDcmtkRenderer = true;
  const std::vector<char> bytes = testing::toBytes(*file);
  EXPECT_EQ(decodeBuffer(bytes.data(), bytes.size(), options).report.decoder, "dcmtk");
  // Nor for what is broken or not an image.
  const std::vector<char> truncated(bytes.begin(),
                                    bytes.begin() + static_cast<std::ptrdiff_t>(bytes.size() / 2));
  EXPECT_EQ(decodeBuffer(truncated.data(), truncated.size(), options).outcome, DecodeOutcome::Failed);
  const std::vector<char> report = testing::toBytes(*testing::makeNonImage("1.2.840.10008.5.1.4.1.1.88.11"));
  EXPECT_EQ(decodeBuffer(report.data(), report.size(), options).outcome, DecodeOutcome::Skipped);
  EXPECT_EQ(*fallback.calls, 0);
}

// --- Synthetic JPEG 2000 files: every pixel description the fallback can hand over ---

TEST(FallbackDecode, WithoutAFallbackJpeg2000IsUnsupportedAsBefore) {
  const Pair pair = makePair({});
  const DecodeResult r = decodeBuffer(pair.j2k.data(), pair.j2k.size());
  EXPECT_EQ(r.outcome, DecodeOutcome::Unsupported);
  EXPECT_NE(r.reason.find("DCMTK has no JPEG 2000 codec"), std::string::npos) << r.reason;
}

TEST(FallbackDecode, UnsignedTwelveBitMatchesAtNativeAndLetterboxedSizes) {
  testing::TestImageSpec spec;
  spec.value = [](int x, int y, int, int) -> long { return (x * 97 + y * 31) % 4096; };
  expectFallbackMatches(spec, Kind::Grey16);
  DecodeOptions boxed;
  boxed.size = 64;
  expectFallbackMatches(spec, Kind::Grey16, boxed);
}

TEST(FallbackDecode, SignedSixteenBitWithRescaleMatches) {
  testing::TestImageSpec spec;
  spec.bitsStored = 16;
  spec.isSigned = true;
  spec.rescaleSlope = 2.0;
  spec.rescaleIntercept = -100.0;
  spec.value = [](int x, int y, int, int) -> long { return (x - 16) * 900 + (y - 20) * 37; };
  expectFallbackMatches(spec, Kind::SignedGrey16);  // percentile window
  spec.windowCenter = -500;
  spec.windowWidth = 20000;
  expectFallbackMatches(spec, Kind::SignedGrey16);  // header window
}

TEST(FallbackDecode, SignedTwelveBitHandedOverAsSignExtendedWordsMatches) {
  testing::TestImageSpec spec;
  spec.bitsStored = 12;
  spec.isSigned = true;
  spec.value = [](int x, int y, int, int) -> long { return (x - 16) * 60 + y; };
  const Pair pair = makePair(spec);
  // A decoder gives sign-extended 16-bit values (-5 as 0xFFFB), not the 12-bit pattern stored in the file.
  ExternalFrame frame;
  frame.kind = Kind::SignedGrey16;
  frame.width = spec.cols;
  frame.height = spec.rows;
  frame.pitch = static_cast<std::size_t>(spec.cols) * 2;
  for (int y = 0; y < spec.rows; ++y) {
    for (int x = 0; x < spec.cols; ++x) {
      const auto word = static_cast<std::uint16_t>(static_cast<std::int16_t>(spec.value(x, y, 0, 0)));
      frame.bytes.push_back(static_cast<std::uint8_t>(word & 0xFF));
      frame.bytes.push_back(static_cast<std::uint8_t>(word >> 8));
    }
  }
  DecodeOptions options;
  options.fallback = CountingFallback().decoder(frame);
  const DecodeResult viaFallback = decodeBuffer(pair.j2k.data(), pair.j2k.size(), options);
  expectSameDecode(viaFallback, decodeBuffer(pair.uncompressed.data(), pair.uncompressed.size()));
}

TEST(FallbackDecode, Monochrome1WithAHeaderWindowMatches) {
  testing::TestImageSpec spec;
  spec.photometric = "MONOCHROME1";
  spec.windowCenter = 1500;
  spec.windowWidth = 2000;
  const Pair pair = makePair(spec);
  DecodeOptions options;
  options.fallback = CountingFallback().decoder(storedFrame(pair.uncompressed, Kind::Grey16));
  const DecodeResult r = decodeBuffer(pair.j2k.data(), pair.j2k.size(), options);
  expectSameDecode(r, decodeBuffer(pair.uncompressed.data(), pair.uncompressed.size()));
  EXPECT_TRUE(r.report.inverted);
  EXPECT_EQ(r.report.windowSource, "header window");
  EXPECT_GT(r.image.at(0, 0), r.image.at(spec.cols - 1, 0));  // low values are bright in MONOCHROME1
}

TEST(FallbackDecode, EightBitGreyMatches) {
  testing::TestImageSpec spec;
  spec.bitsAllocated = 8;
  spec.bitsStored = 8;
  expectFallbackMatches(spec, Kind::Grey8);
}

TEST(FallbackDecode, ImagesTheLutPathDoesNotTakeMatchDcmtksRenderer) {
  testing::TestImageSpec spec;
  spec.value = [](int x, int y, int, int) -> long { return (x * 13 + y * 101) % 4096; };
  DecodeOptions options;
  options.forceDcmtkRenderer = true;
  expectFallbackMatches(spec, Kind::Grey16, options);
}

TEST(FallbackDecode, PaddedRowsAreReadUpToTheirWidth) {
  testing::TestImageSpec spec;
  spec.value = [](int x, int y, int, int) -> long { return x * 100 + y; };
  const Pair pair = makePair(spec);
  DecodeOptions options;
  options.fallback = CountingFallback().decoder(storedFrame(pair.uncompressed, Kind::Grey16, 6));
  expectSameDecode(decodeBuffer(pair.j2k.data(), pair.j2k.size(), options),
                   decodeBuffer(pair.uncompressed.data(), pair.uncompressed.size()));
}

TEST(FallbackDecode, RgbFrameBecomesGreyOrStaysColour) {
  testing::TestImageSpec spec;
  spec.bitsAllocated = 8;
  spec.bitsStored = 8;
  spec.samplesPerPixel = 3;
  spec.photometric = "RGB";
  spec.value = [](int x, int y, int, int s) -> long { return (x * 7 + y * 3 + s * 80) % 256; };
  DecodeOptions grey;
  grey.keepColour = false;
  grey.size = 48;
  expectFallbackMatches(spec, Kind::Rgb24, grey);
  DecodeOptions colour;
  colour.keepColour = true;
  expectFallbackMatches(spec, Kind::Rgb24, colour);

  // JPEG 2000 colour is stored as YBR_ICT/YBR_RCT; decoders hand it over as RGB.
  const Pair rgb = makePair(spec);
  spec.photometric = "YBR_RCT";
  const Pair ybr = makePair(spec);
  grey.fallback = CountingFallback().decoder(storedFrame(rgb.uncompressed, Kind::Rgb24));
  const DecodeResult r = decodeBuffer(ybr.j2k.data(), ybr.j2k.size(), grey);
  grey.fallback = nullptr;
  expectSameDecode(r, decodeBuffer(rgb.uncompressed.data(), rgb.uncompressed.size(), grey));
  EXPECT_EQ(r.image.channels, 1);
  EXPECT_EQ(r.metadata.photometric, "YBR_RCT");
}

TEST(FallbackDecode, MultiFrameFilesUseFrameOneAndSaySo) {
  testing::TestImageSpec spec;
  spec.frames = 3;
  spec.value = [](int x, int y, int frame, int) -> long { return (x * 50 + y * 5 + frame * 1000) % 4096; };
  const Pair pair = makePair(spec);
  DecodeOptions options;
  options.fallback = CountingFallback().decoder(storedFrame(pair.uncompressed, Kind::Grey16));
  const DecodeResult r = decodeBuffer(pair.j2k.data(), pair.j2k.size(), options);
  expectSameDecode(r, decodeBuffer(pair.uncompressed.data(), pair.uncompressed.size()));
  EXPECT_EQ(r.reason, "multi-frame: used frame 1 of 3; decoded by the fallback decoder: " +
                          r.metadata.transferSyntaxName);
  EXPECT_EQ(r.report.framesInFile, 3);
}

// --- Refused frames and failing fallbacks ---

class FallbackFailureTest : public ::testing::Test {
 protected:
  DecodeResult decodeWith(FallbackDecoder fallback) const {
    DecodeOptions options;
    options.fallback = std::move(fallback);
    return decodeBuffer(pair_.j2k.data(), pair_.j2k.size(), options);
  }
  DecodeResult decodeWith(const ExternalFrame& frame) const {
    return decodeWith(CountingFallback().decoder(frame));
  }
  ExternalFrame frame() const { return storedFrame(pair_.uncompressed, Kind::Grey16); }

  Pair pair_ = makePair({});  // 32 x 40, 12-bit MONOCHROME2
};

TEST_F(FallbackFailureTest, NulloptIsUnsupportedNamingTheSyntax) {
  const DecodeResult r = decodeWith(CountingFallback().decoder(std::nullopt));
  EXPECT_EQ(r.outcome, DecodeOutcome::Unsupported);
  EXPECT_NE(r.reason.find("JPEG 2000"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("1.2.840.10008.1.2.4.90"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("the fallback decoder could not decode it"), std::string::npos) << r.reason;
  EXPECT_TRUE(r.image.empty());
  EXPECT_EQ(r.metadata.cols, 32);
}

TEST_F(FallbackFailureTest, AFrameOfAnotherSizeFails) {
  ExternalFrame wide = frame();
  wide.width = 33;
  wide.pitch = 66;
  wide.bytes.resize(wide.pitch * 40);
  const DecodeResult r = decodeWith(wide);
  EXPECT_EQ(r.outcome, DecodeOutcome::Failed);
  EXPECT_NE(r.reason.find("33x40"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("header says 32x40"), std::string::npos) << r.reason;
}

TEST_F(FallbackFailureTest, TooFewBytesFail) {
  ExternalFrame cut = frame();
  cut.bytes.resize(cut.bytes.size() - 1);
  const DecodeResult r = decodeWith(cut);
  EXPECT_EQ(r.outcome, DecodeOutcome::Failed);
  EXPECT_NE(r.reason.find("2559 bytes"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("need 2560"), std::string::npos) << r.reason;
}

TEST_F(FallbackFailureTest, APitchShorterThanARowFails) {
  ExternalFrame narrow = frame();
  narrow.pitch = 63;
  const DecodeResult r = decodeWith(narrow);
  EXPECT_EQ(r.outcome, DecodeOutcome::Failed);
  EXPECT_NE(r.reason.find("pitch of 63 bytes"), std::string::npos) << r.reason;
}

TEST_F(FallbackFailureTest, AColourFrameForAGreyImageFails) {
  ExternalFrame rgb;
  rgb.kind = Kind::Rgb24;
  rgb.width = 32;
  rgb.height = 40;
  rgb.pitch = 96;
  rgb.bytes.assign(96 * 40, 0x40);
  const DecodeResult r = decodeWith(rgb);
  EXPECT_EQ(r.outcome, DecodeOutcome::Failed);
  EXPECT_NE(r.reason.find("RGB frame for an image with 1 sample"), std::string::npos) << r.reason;
}

TEST_F(FallbackFailureTest, AThrowingFallbackFailsWithItsMessage) {
  const DecodeResult r =
      decodeWith([](const void*, std::size_t, const DicomMetadata&) -> std::optional<ExternalFrame> {
        throw std::runtime_error("codec exploded");
      });
  EXPECT_EQ(r.outcome, DecodeOutcome::Failed);
  EXPECT_NE(r.reason.find("codec exploded"), std::string::npos) << r.reason;
  EXPECT_NE(r.reason.find("fallback decoder failed"), std::string::npos) << r.reason;

  const DecodeResult odd = decodeWith(
      [](const void*, std::size_t, const DicomMetadata&) -> std::optional<ExternalFrame> { throw 42; });
  EXPECT_EQ(odd.outcome, DecodeOutcome::Failed);
  EXPECT_NE(odd.reason.find("fallback decoder failed"), std::string::npos) << odd.reason;
}

// --- Through the ingestor ---

class FallbackIngestTest : public ::testing::Test {
 protected:
  testing::TempDir dir_;
  storage::Index index_{dir_.file("index.sqlite")};
  storage::ImageCache cache_{dir_.file("images.bin"), storage::CacheFormat{64, 8}};
};

TEST_F(FallbackIngestTest, TheJpeg2000FilmBecomesADecodedRow) {
  if (!fs::exists(kJ2k) || !fs::exists(kUncompressed))
    GTEST_SKIP() << "missing " << kJ2k << " or " << kUncompressed;
  Ingestor without(index_, cache_);
  const IngestOutcome refused = without.ingestFile(kJ2k.string());
  ASSERT_EQ(refused.state, storage::DecodeState::Unsupported) << refused.reason;

  IngestOptions options;
  options.fallback =
      CountingFallback().decoder(storedFrame(testing::readFileBytes(kUncompressed.string()), Kind::Grey16));
  Ingestor ingestor(index_, cache_, options);
  const IngestOutcome o = ingestor.ingestFile(kJ2k.string());
  ASSERT_EQ(o.state, storage::DecodeState::Decoded) << o.reason;
  EXPECT_TRUE(o.replaced);  // the decodable result replaces the Unsupported row
  const auto row = index_.findInstance(o.resourceId);
  ASSERT_TRUE(row.has_value());
  EXPECT_EQ(row->decodeState, storage::DecodeState::Decoded);
  EXPECT_EQ(row->transferSyntaxUid, "1.2.840.10008.1.2.4.91");
  EXPECT_NE(row->decodeReason.find("decoded by the fallback decoder"), std::string::npos)
      << row->decodeReason;
  ASSERT_TRUE(row->cacheSlot.has_value());

  std::vector<std::uint8_t> cached(cache_.imageBytes());
  cache_.read(*row->cacheSlot, storage::cacheKey(o.resourceId), cached.data());
  DecodeOptions reference;
  reference.size = 64;
  reference.keepColour = false;
  EXPECT_EQ(cached, quantise(decodeFile(kUncompressed.string(), reference).image, 8));
}

TEST_F(FallbackIngestTest, ASyntheticJpeg2000FileBecomesADecodedRow) {
  const Pair pair = makePair({});
  IngestOptions options;
  options.fallback = CountingFallback().decoder(storedFrame(pair.uncompressed, Kind::Grey16));
  Ingestor ingestor(index_, cache_, options);
  const IngestOutcome o = ingestor.ingest(pair.j2k.data(), pair.j2k.size(), "j2k.dcm");
  ASSERT_EQ(o.state, storage::DecodeState::Decoded) << o.reason;
  const auto row = index_.findInstance(o.resourceId);
  ASSERT_TRUE(row.has_value() && row->cacheSlot.has_value());
  std::vector<std::uint8_t> cached(cache_.imageBytes());
  cache_.read(*row->cacheSlot, storage::cacheKey(o.resourceId), cached.data());
  DecodeOptions reference;
  reference.size = 64;
  reference.keepColour = false;
  EXPECT_EQ(cached,
            quantise(decodeBuffer(pair.uncompressed.data(), pair.uncompressed.size(), reference).image, 8));
}

}  // namespace
}  // namespace comcl::imaging
