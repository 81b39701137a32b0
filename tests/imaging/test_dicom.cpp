#include "test_dicom.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpeg/djrploss.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmjpls/djrparam.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>

#include "comcl/imaging/codecs.h"

namespace comcl::testing {

namespace {

void put(DcmItem& item, const DcmTagKey& key, const std::string& value) {
  if (item.putAndInsertString(key, value.c_str()).bad())
    throw std::runtime_error("cannot set a test tag");
}

void putPatientStudy(DcmDataset& ds, const std::string& sopClassUid, bool withPatientId, bool withStudyUid) {
  char uid[100];
  put(ds, DCM_SOPClassUID, sopClassUid);
  put(ds, DCM_SOPInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT));
  if (withStudyUid)
    put(ds, DCM_StudyInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_STUDY_UID_ROOT));
  put(ds, DCM_SeriesInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_SERIES_UID_ROOT));
  if (withPatientId)
    put(ds, DCM_PatientID, "TEST-PATIENT");
  put(ds, DCM_PatientName, "Test^Patient");
  put(ds, DCM_StudyDate, "20240102");
  put(ds, DCM_Modality, "CR");
}

}  // namespace

std::unique_ptr<DcmFileFormat> makeImage(const TestImageSpec& spec) {
  auto file = std::make_unique<DcmFileFormat>();
  DcmDataset& ds = *file->getDataset();
  putPatientStudy(ds, spec.sopClassUid, spec.withPatientId, spec.withStudyUid);
  put(ds, DCM_BodyPartExamined, "CHEST");
  if (spec.withViewPosition)
    put(ds, DCM_ViewPosition, "PA");
  ds.putAndInsertUint16(DCM_Rows, static_cast<Uint16>(spec.rows));
  ds.putAndInsertUint16(DCM_Columns, static_cast<Uint16>(spec.cols));
  ds.putAndInsertUint16(DCM_BitsAllocated, static_cast<Uint16>(spec.bitsAllocated));
  ds.putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(spec.bitsStored));
  ds.putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(spec.bitsStored > 0 ? spec.bitsStored - 1 : 0));
  ds.putAndInsertUint16(DCM_PixelRepresentation, spec.isSigned ? 1 : 0);
  ds.putAndInsertUint16(DCM_SamplesPerPixel, static_cast<Uint16>(spec.samplesPerPixel));
  if (spec.samplesPerPixel == 3)
    ds.putAndInsertUint16(DCM_PlanarConfiguration, 0);
  put(ds, DCM_PhotometricInterpretation, spec.photometric);
  if (spec.frames > 1)
    put(ds, DCM_NumberOfFrames, std::to_string(spec.frames));
  if (spec.rescaleSlope)
    put(ds, DCM_RescaleSlope, std::to_string(*spec.rescaleSlope));
  if (spec.rescaleIntercept)
    put(ds, DCM_RescaleIntercept, std::to_string(*spec.rescaleIntercept));
  if (spec.windowCenter)
    put(ds, DCM_WindowCenter, std::to_string(*spec.windowCenter));
  if (spec.windowWidth)
    put(ds, DCM_WindowWidth, std::to_string(*spec.windowWidth));
  if (!spec.withPixelData)
    return file;

  const long maxStored = (1L << spec.bitsStored) - 1;
  auto value = spec.value ? spec.value : [&](int x, int, int, int) -> long {
    return spec.cols > 1 ? maxStored * x / (spec.cols - 1) : 0;
  };
  const std::size_t count = static_cast<std::size_t>(spec.rows) * static_cast<std::size_t>(spec.cols) *
                            static_cast<std::size_t>(spec.samplesPerPixel) *
                            static_cast<std::size_t>(spec.frames);
  std::size_t i = 0;
  if (spec.bitsAllocated == 8) {
    std::vector<Uint8> pixels(count);
    for (int f = 0; f < spec.frames; ++f)
      for (int y = 0; y < spec.rows; ++y)
        for (int x = 0; x < spec.cols; ++x)
          for (int s = 0; s < spec.samplesPerPixel; ++s)
            pixels[i++] = static_cast<Uint8>(value(x, y, f, s));
    ds.putAndInsertUint8Array(DCM_PixelData, pixels.data(), static_cast<unsigned long>(pixels.size()));
  } else {
    std::vector<Uint16> pixels(count);
    for (int f = 0; f < spec.frames; ++f)
      for (int y = 0; y < spec.rows; ++y)
        for (int x = 0; x < spec.cols; ++x)
          for (int s = 0; s < spec.samplesPerPixel; ++s)
            pixels[i++] =
                static_cast<Uint16>(static_cast<std::uint16_t>(value(x, y, f, s)));  // two's complement
    ds.putAndInsertUint16Array(DCM_PixelData, pixels.data(), static_cast<unsigned long>(pixels.size()));
  }
  return file;
}

std::unique_ptr<DcmFileFormat> makeNonImage(const std::string& sopClassUid) {
  auto file = std::make_unique<DcmFileFormat>();
  putPatientStudy(*file->getDataset(), sopClassUid, true, true);
  return file;
}

std::vector<char> toBytes(DcmFileFormat& file, E_TransferSyntax xfer, double jpegQuality) {
  imaging::registerDicomEncoders();
  DcmDataset& ds = *file.getDataset();
  OFCondition status;
  if (xfer == EXS_JPEGProcess1) {
    DJ_RPLossy params(static_cast<int>(jpegQuality));
    status = ds.chooseRepresentation(xfer, &params);
  } else {
    status = ds.chooseRepresentation(xfer, nullptr);
  }
  if (status.bad() || !ds.canWriteXfer(xfer)) {
    throw std::runtime_error(std::string("cannot encode test image: ") + status.text());
  }
  TempDir dir;
  const std::string path = dir.file("out.dcm");
  status = file.saveFile(path.c_str(), xfer);
  if (status.bad())
    throw std::runtime_error(std::string("cannot write test image: ") + status.text());
  return readFileBytes(path);
}

std::vector<char> readFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace comcl::testing
