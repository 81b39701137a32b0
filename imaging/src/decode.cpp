// DICOM decoding and normalisation with DCMTK. See decode.h for the steps; this file keeps every DCMTK
// object inside RAII owners and turns every failure into an outcome with a one-line reason.
#include "comcl/imaging/decode.h"

#include <dcmtk/config/osconfig.h>  // must come first among DCMTK headers
#include <dcmtk/dcmdata/dccodec.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmimage/diregist.h>  // colour image support for DicomImage
#include <dcmtk/dcmimgle/dcmimage.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>

#include "comcl/imaging/codecs.h"
#include "comcl/imaging/mapped_file.h"
#include "comcl/imaging/resize.h"
#include "grey_lut.h"

namespace comcl::imaging {

const char* toString(DecodeOutcome outcome) {
  switch (outcome) {
    case DecodeOutcome::Decoded:
      return "decoded";
    case DecodeOutcome::Skipped:
      return "skipped";
    case DecodeOutcome::Unsupported:
      return "unsupported";
    case DecodeOutcome::Failed:
      return "failed";
  }
  return "failed";
}

namespace {

std::string text(DcmItem& item, const DcmTagKey& key) {
  OFString value;
  if (item.findAndGetOFString(key, value).good())
    return std::string(value.c_str());
  return {};
}

std::optional<std::string> optionalText(DcmItem& item, const DcmTagKey& key) {
  std::string value = text(item, key);
  if (value.empty())
    return std::nullopt;
  return value;
}

int integer(DcmItem& item, const DcmTagKey& key) {
  Uint16 u = 0;
  if (item.findAndGetUint16(key, u).good())
    return u;
  OFString s;  // IS-valued tags such as NumberOfFrames
  if (item.findAndGetOFString(key, s).good() && !s.empty()) {
    try {
      return std::stoi(s.c_str());
    } catch (...) {
      return 0;
    }
  }
  return 0;
}

double decimal(DcmItem& item, const DcmTagKey& key, double fallback) {
  Float64 value = 0;
  if (item.findAndGetFloat64(key, value).good())
    return value;
  return fallback;
}

DicomMetadata readMetadata(DcmFileFormat& file) {
  DcmDataset& ds = *file.getDataset();
  DicomMetadata m;
  m.sopClassUid = text(ds, DCM_SOPClassUID);
  if (m.sopClassUid.empty())
    m.sopClassUid = text(*file.getMetaInfo(), DCM_MediaStorageSOPClassUID);
  if (!m.sopClassUid.empty())
    m.sopClassName = dcmFindNameOfUID(m.sopClassUid.c_str(), "");
  m.sopInstanceUid = text(ds, DCM_SOPInstanceUID);
  m.seriesInstanceUid = text(ds, DCM_SeriesInstanceUID);
  m.studyInstanceUid = text(ds, DCM_StudyInstanceUID);
  m.patientId = optionalText(ds, DCM_PatientID);
  m.studyDate = optionalText(ds, DCM_StudyDate);
  m.accessionNumber = text(ds, DCM_AccessionNumber);
  m.modality = optionalText(ds, DCM_Modality);
  m.bodyPart = optionalText(ds, DCM_BodyPartExamined);
  m.viewPosition = optionalText(ds, DCM_ViewPosition);
  m.laterality = optionalText(ds, DCM_ImageLaterality);
  if (!m.laterality)
    m.laterality = optionalText(ds, DCM_Laterality);
  m.transferSyntaxUid = text(*file.getMetaInfo(), DCM_TransferSyntaxUID);
  if (m.transferSyntaxUid.empty())
    m.transferSyntaxUid = DcmXfer(ds.getOriginalXfer()).getXferID();
  DcmXfer xfer(m.transferSyntaxUid.c_str());
  m.transferSyntaxName = xfer.getXfer() == EXS_Unknown ? "unknown" : xfer.getXferName();
  m.photometric = text(ds, DCM_PhotometricInterpretation);
  m.rows = integer(ds, DCM_Rows);
  m.cols = integer(ds, DCM_Columns);
  m.frames = ds.tagExists(DCM_PixelData) ? std::max(1, integer(ds, DCM_NumberOfFrames)) : 0;
  m.samplesPerPixel = integer(ds, DCM_SamplesPerPixel);
  m.bitsAllocated = integer(ds, DCM_BitsAllocated);
  m.bitsStored = integer(ds, DCM_BitsStored);
  m.pixelRepresentation = integer(ds, DCM_PixelRepresentation);

  const bool isImage = ds.tagExists(DCM_PixelData);
  auto requireText = [&](const std::string& value, const char* name) {
    if (value.empty())
      m.missing.emplace_back(name);
  };
  requireText(m.patientId.value_or(""), "PatientID");
  requireText(m.studyInstanceUid, "StudyInstanceUID");
  requireText(m.seriesInstanceUid, "SeriesInstanceUID");
  requireText(m.sopInstanceUid, "SOPInstanceUID");
  requireText(m.studyDate.value_or(""), "StudyDate");
  requireText(m.modality.value_or(""), "Modality");
  if (isImage)
    requireText(m.viewPosition.value_or(""), "ViewPosition");
  return m;
}

DecodeResult failure(DecodeOutcome outcome, std::string reason, DicomMetadata metadata = {}) {
  DecodeResult r;
  r.outcome = outcome;
  r.reason = std::move(reason);
  r.metadata = std::move(metadata);
  return r;
}

std::string describeSopClass(const DicomMetadata& m) {
  if (m.sopClassUid.empty())
    return "no SOP class";
  if (m.sopClassName.empty())
    return "SOP class " + m.sopClassUid;
  return m.sopClassName + " (" + m.sopClassUid + ")";
}

// Checks what DicomImage would otherwise reject with a vague status, or accept and misread.
std::optional<DecodeResult> checkPixelDescription(DcmDataset& ds, const DicomMetadata& m,
                                                  const DecodeOptions& options) {
  auto fail = [&](const std::string& why) { return failure(DecodeOutcome::Failed, why, m); };
  if (m.rows <= 0 || m.cols <= 0) {
    return fail("zero-sized image (Rows " + std::to_string(m.rows) + ", Columns " + std::to_string(m.cols) +
                ")");
  }
  const std::size_t pixels = static_cast<std::size_t>(m.rows) * static_cast<std::size_t>(m.cols);
  if (pixels > options.maxPixels) {
    return fail("absurd dimensions " + std::to_string(m.cols) + "x" + std::to_string(m.rows) + " (limit " +
                std::to_string(options.maxPixels) + " pixels)");
  }
  if (m.bitsAllocated != 1 && m.bitsAllocated != 8 && m.bitsAllocated != 16 && m.bitsAllocated != 32) {
    return fail("unsupported BitsAllocated " + std::to_string(m.bitsAllocated));
  }
  if (m.bitsStored <= 0 || m.bitsStored > m.bitsAllocated) {
    return fail("BitsStored (" + std::to_string(m.bitsStored) + ") must be between 1 and BitsAllocated (" +
                std::to_string(m.bitsAllocated) + ")");
  }
  if (m.samplesPerPixel != 1 && m.samplesPerPixel != 3) {
    return fail("unsupported SamplesPerPixel " + std::to_string(m.samplesPerPixel));
  }
  if (m.photometric.empty())
    return fail("missing PhotometricInterpretation");

  DcmXfer xfer(ds.getOriginalXfer());
  if (xfer.isNotEncapsulated()) {
    // Native pixel data must hold at least the first frame; a shorter value means a truncated or lying
    // header.
    DcmElement* element = nullptr;
    if (ds.findAndGetElement(DCM_PixelData, element).good() && element != nullptr) {
      const std::size_t frameBits =
          pixels * static_cast<std::size_t>(m.samplesPerPixel) * static_cast<std::size_t>(m.bitsAllocated);
      const std::size_t frameBytes = (frameBits + 7) / 8;
      const std::size_t have = element->getLength();
      if (have < frameBytes) {
        return fail("pixel data too short: " + std::to_string(have) + " bytes, one " +
                    std::to_string(m.cols) + "x" + std::to_string(m.rows) + " frame needs " +
                    std::to_string(frameBytes));
      }
    }
  }
  return std::nullopt;
}

// DicomImage renders in host byte order; dequantise() reads little-endian samples.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "16-bit rendered output is read as little-endian");

// DicomImage's rendered output (interleaved 8-bit RGB, or 16-bit grey) as a float image in [0, 1].
Image renderedToImage(DicomImage& dimg, bool colour) {
  const int bits = colour ? 8 : 16;
  const void* rendered = dimg.getOutputData(bits, 0, 0);
  if (rendered == nullptr)
    return {};
  return dequantise(static_cast<const std::uint8_t*>(rendered), static_cast<int>(dimg.getWidth()),
                    static_cast<int>(dimg.getHeight()), bits, colour ? 3 : 1);
}

// The general renderer: DCMTK's DicomImage handles colour models, LUT sequences and unusual bit layouts.
Image renderWithDcmtk(DcmDataset& ds, E_TransferSyntax xfer, const DecodeOptions& options,
                      DecodeReport& report, std::string& error) {
  // Decode only the first frame; partial access spares decompressing the other frames.
  DicomImage dimg(&ds, xfer, CIF_UsePartialAccessToPixelData, 0, 1);
  if (dimg.getStatus() != EIS_Normal) {
    error = std::string("DCMTK cannot render the pixels: ") + DicomImage::getString(dimg.getStatus());
    return {};
  }
  const bool colour = dimg.isMonochrome() == 0;
  if (colour) {
    report.windowSource = "colour (none)";
  } else {
    if (dimg.getVoiLutCount() > 0 && dimg.setVoiLut(0) != 0) {
      report.windowSource = "VOI LUT";
    } else if (dimg.getWindowCount() > 0 && dimg.setWindow(0) != 0) {
      report.windowSource = "header window";
    } else {
      dimg.setHistogramWindow(options.percentileClip);
      report.windowSource = "percentile window";
    }
    dimg.getWindow(report.windowCenter, report.windowWidth);  // fails (leaves 0) for a VOI LUT
    // DicomImage renders MONOCHROME1 inverted (bright = dense), as a viewer shows it.
    report.inverted = dimg.getPhotometricInterpretation() == EPI_Monochrome1;
  }
  Image image = renderedToImage(dimg, colour);
  if (image.empty()) {
    error = std::string("DCMTK could not produce output pixels: ") + DicomImage::getString(dimg.getStatus());
  }
  return image;
}

// Plain 8/16-bit greyscale without LUT sequences takes the lookup-table path (grey_lut.h), several times
// faster than DicomImage on large films; anything else, or options.forceDcmtkRenderer, does not.
std::optional<detail::GreyFormat> lutPathFormat(DcmDataset& ds, const DicomMetadata& m,
                                                const DecodeOptions& options) {
  if (options.forceDcmtkRenderer || m.samplesPerPixel != 1)
    return std::nullopt;
  if (m.photometric != "MONOCHROME1" && m.photometric != "MONOCHROME2")
    return std::nullopt;
  if (m.bitsAllocated != 8 && m.bitsAllocated != 16)
    return std::nullopt;
  if (integer(ds, DCM_HighBit) != m.bitsStored - 1)
    return std::nullopt;
  if (ds.tagExists(DCM_ModalityLUTSequence) || ds.tagExists(DCM_VOILUTSequence))
    return std::nullopt;
  detail::GreyFormat f;
  f.bitsAllocated = m.bitsAllocated;
  f.bitsStored = m.bitsStored;
  f.isSigned = m.pixelRepresentation == 1;
  f.monochrome1 = m.photometric == "MONOCHROME1";
  f.slope = decimal(ds, DCM_RescaleSlope, 1.0);
  f.intercept = decimal(ds, DCM_RescaleIntercept, 0.0);
  if (f.slope == 0.0)
    return std::nullopt;
  const std::string function = text(ds, DCM_VOILUTFunction);
  if (!function.empty() && function != "LINEAR" && function != "LINEAR_EXACT" && function != "SIGMOID") {
    return std::nullopt;
  }
  return f;
}

// The header's first window, when it is usable with its VOI LUT function.
std::optional<detail::Window> headerWindow(DcmDataset& ds) {
  Float64 center = 0, width = 0;
  if (ds.findAndGetFloat64(DCM_WindowCenter, center, 0).bad() ||
      ds.findAndGetFloat64(DCM_WindowWidth, width, 0).bad()) {
    return std::nullopt;
  }
  detail::Window w;
  w.center = center;
  w.width = width;
  const std::string function = text(ds, DCM_VOILUTFunction);
  if (function == "LINEAR_EXACT") {
    w.function = detail::VoiFunction::LinearExact;
    if (width <= 0)
      return std::nullopt;
  } else if (function == "SIGMOID") {
    w.function = detail::VoiFunction::Sigmoid;
    if (width <= 0)
      return std::nullopt;
  } else if (width < 1) {  // LINEAR requires a width of at least 1
    return std::nullopt;
  }
  return w;
}

Image renderWithLut(DcmDataset& ds, E_TransferSyntax pixelXfer, const detail::GreyFormat& format,
                    const DicomMetadata& m, const DecodeOptions& options, DecodeReport& report,
                    std::string& error) {
  DcmElement* element = nullptr;
  auto* pixelData =
      ds.findAndGetElement(DCM_PixelData, element).good() ? dynamic_cast<DcmPixelData*>(element) : nullptr;
  Uint32 frameBytes = 0;
  if (pixelData == nullptr || pixelData->getUncompressedFrameSize(&ds, frameBytes).bad()) {
    error = "cannot access the pixel data";
    return {};
  }
  // Native pixel data is already in memory in local byte order (16-bit words) and is used where it lies;
  // encapsulated data is decompressed, first frame only, into 16-bit words (DCMTK wants an even size).
  const void* samples = nullptr;
  std::vector<std::uint16_t> frame;
  const DcmXfer xfer(pixelXfer);
  if (xfer.isNotEncapsulated() && format.bitsAllocated == 16) {
    Uint16* words = nullptr;
    if (pixelData->getUint16Array(words).good())
      samples = words;
  } else if (xfer.isNotEncapsulated() && xfer.isLittleEndian() && pixelData->getVR() == EVR_OB) {
    Uint8* bytes = nullptr;
    if (pixelData->getUint8Array(bytes).good())
      samples = bytes;
  }
  if (samples == nullptr) {
    frame.resize(frameBytes / 2 + 1);
    Uint32 startFragment = 0;
    OFString colourModel;
    const OFCondition status = pixelData->getUncompressedFrame(
        &ds, 0, startFragment, frame.data(), static_cast<Uint32>(frame.size() * 2), colourModel);
    if (status.bad()) {
      error = std::string("cannot decode frame 1: ") + status.text();
      return {};
    }
    samples = frame.data();
  }
  const std::size_t count = static_cast<std::size_t>(m.rows) * static_cast<std::size_t>(m.cols);
  detail::Window window;
  if (auto header = headerWindow(ds)) {
    window = *header;
    report.windowSource =
        window.function == detail::VoiFunction::Sigmoid ? "header window (SIGMOID)" : "header window";
  } else {
    window = detail::percentileWindow(format, samples, count, options.percentileClip);
    report.windowSource = "percentile window";
  }
  report.windowCenter = window.center;
  report.windowWidth = window.width;
  report.inverted = format.monochrome1;
  return detail::applyLut(format, samples, m.cols, m.rows, detail::buildLut(format, window));
}

std::size_t bytesPerPixel(ExternalFrame::Kind kind) {
  switch (kind) {
    case ExternalFrame::Kind::Grey8:
      return 1;
    case ExternalFrame::Kind::Grey16:
    case ExternalFrame::Kind::SignedGrey16:
      return 2;
    case ExternalFrame::Kind::Rgb24:
      return 3;
  }
  return 0;
}

const char* kindName(ExternalFrame::Kind kind) {
  switch (kind) {
    case ExternalFrame::Kind::Grey8:
      return "8-bit grey";
    case ExternalFrame::Kind::Grey16:
      return "16-bit grey";
    case ExternalFrame::Kind::SignedGrey16:
      return "signed 16-bit grey";
    case ExternalFrame::Kind::Rgb24:
      return "RGB";
  }
  return "unknown";
}

// Replaces the pixel data DCMTK cannot decode by the fallback decoder's frame as native (uncompressed)
// pixel data, and the pixel description in `ds` and `m` by the frame's, so that the usual renderers treat
// it exactly like an uncompressed file with the same stored values. Returns why the frame is unusable, or
// nullopt.
std::optional<std::string> adoptExternalFrame(DcmDataset& ds, DicomMetadata& m, const ExternalFrame& frame) {
  const std::size_t pixelBytes = bytesPerPixel(frame.kind);
  if (pixelBytes == 0)
    return std::string("the fallback decoder gave a frame of an unknown kind");
  const std::string gave = std::string("the fallback decoder gave a ") + kindName(frame.kind) + " frame";
  if (frame.width != m.cols || frame.height != m.rows) {
    return gave + " of " + std::to_string(frame.width) + "x" + std::to_string(frame.height) +
           " pixels, but the header says " + std::to_string(m.cols) + "x" + std::to_string(m.rows);
  }
  const bool colour = frame.kind == ExternalFrame::Kind::Rgb24;
  if (m.samplesPerPixel != (colour ? 3 : 1)) {
    return gave + " for an image with " + std::to_string(m.samplesPerPixel) + " sample(s) per pixel (" +
           m.photometric + ")";
  }
  const auto width = static_cast<std::size_t>(frame.width);
  const auto height = static_cast<std::size_t>(frame.height);
  const std::size_t rowBytes = width * pixelBytes;
  if (frame.pitch < rowBytes) {
    return gave + " with a pitch of " + std::to_string(frame.pitch) + " bytes, shorter than a row of " +
           std::to_string(rowBytes);
  }
  const std::size_t needed = (height - 1) * frame.pitch + rowBytes;
  if (frame.bytes.size() < needed) {
    return gave + " of " + std::to_string(frame.bytes.size()) + " bytes, but " + std::to_string(frame.width) +
           "x" + std::to_string(frame.height) + " pixels with a pitch of " + std::to_string(frame.pitch) +
           " need " + std::to_string(needed);
  }

  const int bitsAllocated = pixelBytes == 2 ? 16 : 8;
  const int bitsStored = colour ? 8 : std::min(m.bitsStored, bitsAllocated);
  int pixelRepresentation = m.pixelRepresentation;
  if (frame.kind == ExternalFrame::Kind::SignedGrey16)
    pixelRepresentation = 1;
  else if (colour)
    pixelRepresentation = 0;

  // Rows packed without padding, as native pixel data is; 16-bit samples stay in host byte order, as DCMTK
  // keeps words in memory.
  auto packRows = [&](std::uint8_t* out) {
    for (std::size_t y = 0; y < height; ++y)
      std::memcpy(out + y * rowBytes, frame.bytes.data() + y * frame.pitch, rowBytes);
  };
  delete ds.remove(DCM_PixelData);
  delete ds.remove(DCM_NumberOfFrames);
  OFCondition status;
  if (bitsAllocated == 16) {
    std::vector<Uint16> words(width * height);
    packRows(reinterpret_cast<std::uint8_t*>(words.data()));
    status =
        ds.putAndInsertUint16Array(DCM_PixelData, words.data(), static_cast<unsigned long>(words.size()));
  } else {
    std::vector<Uint8> bytes(rowBytes * height);
    packRows(bytes.data());
    status = ds.putAndInsertUint8Array(DCM_PixelData, bytes.data(), static_cast<unsigned long>(bytes.size()));
  }
  auto put = [&](const DcmTagKey& key, int value) {
    if (status.good())
      status = ds.putAndInsertUint16(key, static_cast<Uint16>(value));
  };
  put(DCM_BitsAllocated, bitsAllocated);
  put(DCM_BitsStored, bitsStored);
  put(DCM_HighBit, bitsStored - 1);
  put(DCM_PixelRepresentation, pixelRepresentation);
  if (colour) {
    put(DCM_PlanarConfiguration, 0);
    if (status.good())
      status = ds.putAndInsertString(DCM_PhotometricInterpretation, "RGB");
  }
  if (status.bad())
    return std::string("cannot take over the fallback decoder's frame: ") + status.text();

  m.bitsAllocated = bitsAllocated;
  m.bitsStored = bitsStored;
  m.pixelRepresentation = pixelRepresentation;
  m.frames = 1;
  if (colour)
    m.photometric = "RGB";
  return std::nullopt;
}

// Why DCMTK cannot decode the pixel data of `ds` (in the words of the Unsupported reason), or "".
std::string undecodableReason(const DicomMetadata& metadata, E_TransferSyntax xfer) {
  DcmXfer declared(metadata.transferSyntaxUid.c_str());
  if (declared.getXfer() == EXS_Unknown)
    return "unknown transfer syntax " + metadata.transferSyntaxUid;
  switch (xfer) {
    case EXS_JPEG2000LosslessOnly:
    case EXS_JPEG2000:
    case EXS_JPEG2000MulticomponentLosslessOnly:
    case EXS_JPEG2000Multicomponent:
      return std::string(DcmXfer(xfer).getXferName()) + " (" + metadata.transferSyntaxUid +
             ") is unsupported here: DCMTK has no JPEG 2000 codec (the Orthanc plugin falls back to "
             "Orthanc's own decoder)";
    default:
      break;
  }
  if (DcmXfer(xfer).isEncapsulated() && !DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit)) {
    return std::string("no decoder for ") + DcmXfer(xfer).getXferName() + " (" + metadata.transferSyntaxUid +
           ")";
  }
  return {};
}

bool knownSyntaxName(const DicomMetadata& m) {
  return !m.transferSyntaxName.empty() && m.transferSyntaxName != "unknown";
}
// "JPEG 2000 (Lossless or Lossy) (1.2.840.10008.1.2.4.91)", or "transfer syntax 1.2.3" for unknown ones.
std::string describeSyntax(const DicomMetadata& m) {
  if (!knownSyntaxName(m))
    return "transfer syntax " + m.transferSyntaxUid;
  return m.transferSyntaxName + " (" + m.transferSyntaxUid + ")";
}

DecodeResult decodeFileFormat(DcmFileFormat& file, bool hadPreamble, const void* data, std::size_t size,
                              const DecodeOptions& options) {
  DcmDataset& ds = *file.getDataset();
  DicomMetadata metadata = readMetadata(file);

  const bool hasPixels = ds.tagExists(DCM_PixelData);
  if (!hadPreamble && !hasPixels && metadata.sopClassUid.empty() && !ds.tagExists(DCM_Rows)) {
    return failure(DecodeOutcome::Failed, "not a DICOM file (no DICM preamble and no DICOM attributes)");
  }
  if (!hasPixels) {
    if (ds.tagExists(DCM_FloatPixelData) || ds.tagExists(DCM_DoubleFloatPixelData)) {
      return failure(DecodeOutcome::Unsupported, "float pixel data is not supported", metadata);
    }
    if (!metadata.sopClassUid.empty() && dcmIsImageStorageSOPClassUID(metadata.sopClassUid.c_str())) {
      return failure(DecodeOutcome::Failed, "no pixel data in an image object: " + describeSopClass(metadata),
                     metadata);
    }
    return failure(DecodeOutcome::Skipped, "not an image: " + describeSopClass(metadata), metadata);
  }

  E_TransferSyntax xfer = ds.getOriginalXfer();
  const std::string undecodable = undecodableReason(metadata, xfer);
  if (!undecodable.empty() && !options.fallback)
    return failure(DecodeOutcome::Unsupported, undecodable, metadata);
  if (auto problem = checkPixelDescription(ds, metadata, options))
    return std::move(*problem);

  // `pixels` describes the pixel data the renderers see: the file's, or the fallback decoder's frame.
  DicomMetadata pixels = metadata;
  const bool useFallback = !undecodable.empty();
  if (useFallback) {
    std::optional<ExternalFrame> frame;
    try {
      frame = options.fallback(data, size, metadata);
    } catch (const std::exception& e) {
      return failure(DecodeOutcome::Failed,
                     "the fallback decoder failed on " + describeSyntax(metadata) + ": " + e.what(),
                     metadata);
    } catch (...) {
      return failure(DecodeOutcome::Failed,
                     "the fallback decoder failed on " + describeSyntax(metadata) + " (unknown exception)",
                     metadata);
    }
    if (!frame) {
      return failure(DecodeOutcome::Unsupported,
                     "no decoder for " + describeSyntax(metadata) +
                         ": DCMTK has none and the fallback decoder could not decode it",
                     metadata);
    }
    if (auto problem = adoptExternalFrame(ds, pixels, *frame))
      return failure(DecodeOutcome::Failed, *problem, metadata);
    xfer = EXS_LittleEndianExplicit;  // the native pixel data now in `ds`
  }

  DecodeResult result;
  result.metadata = metadata;
  DecodeReport& report = result.report;
  report.framesInFile = metadata.frames;
  report.rescaleSlope = decimal(ds, DCM_RescaleSlope, 1.0);
  report.rescaleIntercept = decimal(ds, DCM_RescaleIntercept, 0.0);
  report.modalityLutSequence = ds.tagExists(DCM_ModalityLUTSequence);

  std::string error;
  Image native;
  if (auto format = lutPathFormat(ds, pixels, options)) {
    report.decoder = "lut";
    native = renderWithLut(ds, xfer, *format, pixels, options, report, error);
  } else {
    report.decoder = "dcmtk";
    native = renderWithDcmtk(ds, xfer, options, report, error);
  }
  if (useFallback)
    report.decoder = "fallback";
  if (native.empty())
    return failure(DecodeOutcome::Failed, error, metadata);
  const bool colour = native.channels == 3;
  if (colour && !options.keepColour)
    native = toGrey(native);

  if (options.size > 0) {
    Letterboxed boxed = letterbox(native, options.size);
    result.image = std::move(boxed.image);
    report.content = boxed.content;
  } else {
    report.content = Rect{0, 0, native.width, native.height};
    result.image = std::move(native);
  }
  report.outputWidth = result.image.width;
  report.outputHeight = result.image.height;
  result.outcome = DecodeOutcome::Decoded;
  if (metadata.frames > 1) {
    result.reason = "multi-frame: used frame 1 of " + std::to_string(metadata.frames);
  }
  if (useFallback) {
    result.reason += std::string(result.reason.empty() ? "" : "; ") + "decoded by the fallback decoder: " +
                     (knownSyntaxName(metadata) ? metadata.transferSyntaxName : describeSyntax(metadata));
  }
  return result;
}

}  // namespace

DecodeResult decodeBuffer(const void* data, std::size_t size, const DecodeOptions& options) {
  try {
    registerDicomDecoders();
    if (size == 0)
      return failure(DecodeOutcome::Failed, "empty file");
    const auto* bytes = static_cast<const char*>(data);
    const bool hadPreamble = size >= 132 && std::string_view(bytes + 128, 4) == "DICM";

    DcmInputBufferStream stream;
    stream.setBuffer(data, static_cast<offile_off_t>(size));
    stream.setEos();
    DcmFileFormat file;
    file.transferInit();
    const OFCondition status = file.read(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
    file.transferEnd();
    if (status.bad()) {
      // DCMTK says "Invalid stream" both for cut-off files and for bytes that are not DICOM at all; the
      // preamble and whether parsing ran into the end of the bytes tell the two apart.
      const std::string detail = std::string(" (DCMTK: ") + status.text() + ")";
      if (!hadPreamble) {
        return failure(DecodeOutcome::Failed,
                       "not a DICOM file: no DICM preamble and no readable data set" + detail);
      }
      if (stream.eos() || status == EC_StreamNotifyClient) {
        return failure(DecodeOutcome::Failed, "truncated DICOM file: data ends inside an element" + detail);
      }
      return failure(DecodeOutcome::Failed, "corrupt DICOM file" + detail);
    }
    return decodeFileFormat(file, hadPreamble, data, size, options);
  } catch (const std::bad_alloc&) {
    return failure(DecodeOutcome::Failed, "out of memory while decoding");
  } catch (const std::exception& e) {
    return failure(DecodeOutcome::Failed, std::string("decoding error: ") + e.what());
  }
}

DecodeResult decodeFile(const std::string& path, const DecodeOptions& options) {
  const MappedFile file(path);
  if (!file.ok())
    return failure(DecodeOutcome::Failed, file.error());
  return decodeBuffer(file.data(), file.size(), options);
}

}  // namespace comcl::imaging
