// DICOM bytes -> calibrated pixels -> the normalised image the system trains on (DCMTK).
//
// Steps: parse; recognise non-image objects (skipped with a reason); validate the pixel description;
// decode the first frame with any codec DCMTK has (uncompressed LE/BE, deflate, JPEG baseline/extended/
// lossless, JPEG-LS, RLE); modality LUT (rescale slope/intercept or a modality LUT sequence); VOI: the
// header's VOI LUT, else its first window, else a robust percentile window; MONOCHROME1 is inverted so that
// bright always means dense; colour images stay RGB. Optionally letterboxed to a square size.
// Pixel data DCMTK has no decoder for (JPEG 2000, ...) can come from a fallback decoder (the Orthanc plugin
// uses Orthanc's own); its stored values then take the same path as uncompressed pixels would.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "comcl/imaging/image.h"

namespace comcl::imaging {

enum class DecodeOutcome {
  Decoded,
  Skipped,      // not an image object: SR, PDF, presentation state, ... (never an error)
  Unsupported,  // a valid image whose encoding this build cannot decode (JPEG 2000, unknown codec)
  Failed,       // corrupt or invalid: truncated, not DICOM, inconsistent pixel description
};
const char* toString(DecodeOutcome outcome);

// Header facts used by the index (all optional in the file; missing ones are listed in `missing`).
struct DicomMetadata {
  std::string sopClassUid;
  std::string sopClassName;  // DCMTK's name for the SOP class, when known
  std::string sopInstanceUid;
  std::string seriesInstanceUid;
  std::string studyInstanceUid;
  std::optional<std::string> patientId;
  std::optional<std::string> studyDate;
  std::string accessionNumber;
  std::optional<std::string> modality;
  std::optional<std::string> bodyPart;
  std::optional<std::string> viewPosition;
  std::optional<std::string> laterality;  // ImageLaterality, else Laterality
  std::string transferSyntaxUid;
  std::string transferSyntaxName;
  std::string photometric;
  int rows = 0;
  int cols = 0;
  int frames = 0;
  int samplesPerPixel = 0;
  int bitsAllocated = 0;
  int bitsStored = 0;
  int pixelRepresentation = 0;       // 0 unsigned, 1 signed
  std::vector<std::string> missing;  // e.g. "PatientID", "ViewPosition"
};

// What the normalisation did, for the CLI's report and the index.
struct DecodeReport {
  double rescaleSlope = 1.0;
  double rescaleIntercept = 0.0;
  bool modalityLutSequence = false;
  std::string windowSource;  // "VOI LUT", "header window", "percentile window", "colour (none)"
  double windowCenter = 0;
  double windowWidth = 0;
  bool inverted = false;  // MONOCHROME1 was inverted
  int framesInFile = 0;   // only the first frame is used
  int outputWidth = 0;
  int outputHeight = 0;
  Rect content;  // position of the image inside the letterboxed output
  // Who produced the pixels: "lut" (DCMTK decoded, lookup-table path), "dcmtk" (DCMTK decoded and
  // rendered), "fallback" (DecodeOptions::fallback decoded, then rendered like uncompressed pixels).
  std::string decoder;
};

// Stored pixel values of frame 1 from another decoder: no modality rescale, no VOI, no inversion applied.
struct ExternalFrame {
  enum class Kind {
    Grey8,         // one byte per pixel
    Grey16,        // uint16 per pixel, host byte order
    SignedGrey16,  // int16 per pixel (two's complement), host byte order
    Rgb24,         // R, G, B bytes per pixel (colour models such as YBR_ICT already converted to RGB)
  } kind = Kind::Grey16;
  int width = 0;
  int height = 0;
  std::size_t pitch = 0;            // bytes per row (>= width * bytes per pixel)
  std::vector<std::uint8_t> bytes;  // height * pitch
};

// Called only when DCMTK cannot decode the pixel data (no codec: JPEG 2000, or any encapsulated or unknown
// transfer syntax without a decoder), with the whole DICOM bytes and the parsed header. Returns nullopt when
// it cannot decode them either. Its frame is checked against the header (Rows, Columns, SamplesPerPixel)
// and then gets the header's modality rescale, VOI window, MONOCHROME1 inversion and letterboxing, exactly
// as DCMTK-decoded pixels would. Exceptions it throws become Failed outcomes. It must be thread-safe when
// decoding runs in several threads (e.g. one Ingestor used from several threads).
using FallbackDecoder = std::function<std::optional<ExternalFrame>(const void* data, std::size_t size,
                                                                   const DicomMetadata& header)>;

struct DecodeOptions {
  int size = 0;                             // 0: keep the native size; else letterbox into size x size
  bool keepColour = true;                   // false: colour images are converted to luminance
  double percentileClip = 0.005;            // fraction excluded at each end by the percentile window
  std::size_t maxPixels = kMaxImagePixels;  // larger images are refused as absurd (see image.h)
  // Plain greyscale normally takes a lookup-table path; this forces DCMTK's general renderer (tests,
  // benchmarks).
  bool forceDcmtkRenderer = false;
  // Decodes what DCMTK cannot (see FallbackDecoder); empty: such files are Unsupported.
  FallbackDecoder fallback;
};

struct DecodeResult {
  DecodeOutcome outcome = DecodeOutcome::Failed;
  // One line; empty when decoded without remarks. Remarks: "multi-frame: used frame 1 of N", "decoded by the
  // fallback decoder: <transfer syntax name>", joined by "; ".
  std::string reason;
  DicomMetadata metadata;
  DecodeReport report;
  Image image;  // only when outcome == Decoded
};

// Never throws for bad input: every problem becomes an outcome and a one-line reason.
DecodeResult decodeFile(const std::string& path, const DecodeOptions& options = {});
DecodeResult decodeBuffer(const void* data, std::size_t size, const DecodeOptions& options = {});

}  // namespace comcl::imaging
