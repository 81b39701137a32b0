// Builds small DICOM objects for tests, so each decode path and each bad input is exercised on purpose.
#pragma once

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "temp_dir.h"

namespace comcl::testing {

struct TestImageSpec {
  int rows = 40;
  int cols = 32;
  int bitsAllocated = 16;
  int bitsStored = 12;
  bool isSigned = false;
  std::string photometric = "MONOCHROME2";
  int samplesPerPixel = 1;
  int frames = 1;
  std::optional<double> rescaleSlope;
  std::optional<double> rescaleIntercept;
  std::optional<double> windowCenter;
  std::optional<double> windowWidth;
  std::string sopClassUid = "1.2.840.10008.5.1.4.1.1.1";  // CR Image Storage
  bool withPixelData = true;
  bool withPatientId = true;
  bool withStudyUid = true;
  bool withViewPosition = true;
  // Stored value of sample `s` at (x, y) in `frame`; defaults to a horizontal ramp over the stored range.
  std::function<long(int x, int y, int frame, int s)> value;
};

std::unique_ptr<DcmFileFormat> makeImage(const TestImageSpec& spec);
// A non-image object of the given SOP class (SR, PDF, presentation state...) with patient/study tags.
std::unique_ptr<DcmFileFormat> makeNonImage(const std::string& sopClassUid);

// Serialises with the given transfer syntax (encoders are registered on first use) into file bytes.
std::vector<char> toBytes(DcmFileFormat& file, E_TransferSyntax xfer = EXS_LittleEndianExplicit,
                          double jpegQuality = 90);
std::vector<char> readFileBytes(const std::string& path);

}  // namespace comcl::testing
