// Tests of the synthetic archive generator: determinism, layout, DICOM attributes, every encoding through
// DCMTK's own decoders, and that lesions, patients and degradations change the pixels as intended. Only
// DCMTK and small local helpers are used, not the project's decoder or quality code.
#include "comcl/imaging/synth.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "temp_dir.h"

namespace fs = std::filesystem;
using comcl::imaging::Degradation;
using comcl::imaging::Encoding;
using comcl::imaging::Image;
using comcl::imaging::renderChest;
using comcl::imaging::SynthImage;
using comcl::imaging::SynthOptions;
using comcl::imaging::writeSyntheticArchive;
using comcl::testing::TempDir;

namespace {

// Decoders for the compressed transfer syntaxes, registered once for this process.
class DecoderRegistration {
 public:
  DecoderRegistration() {
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  }
  ~DecoderRegistration() {
    DcmRLEDecoderRegistration::cleanup();
    DJLSDecoderRegistration::cleanup();
    DJDecoderRegistration::cleanup();
  }
  DecoderRegistration(const DecoderRegistration&) = delete;
  DecoderRegistration& operator=(const DecoderRegistration&) = delete;
};

void ensureDecoders() {
  static const DecoderRegistration registration;
}

SynthOptions smallOptions(const std::string& dir) {
  SynthOptions o;
  o.outputDir = dir;
  o.patients = 2;
  o.studiesPerPatient = 2;
  o.size = 96;
  o.seed = 42;
  return o;
}

std::string readBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::map<std::string, std::string> allFiles(const fs::path& root) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.is_regular_file()) {
      files[fs::relative(entry.path(), root).generic_string()] = readBytes(entry.path());
    }
  }
  return files;
}

std::unique_ptr<DcmFileFormat> load(const fs::path& path) {
  auto file = std::make_unique<DcmFileFormat>();
  const OFCondition status = file->loadFile(path.string().c_str());
  if (status.bad()) {
    throw std::runtime_error("cannot load " + path.string() + ": " + status.text());
  }
  return file;
}

std::string text(DcmItem& item, const DcmTagKey& tag) {
  OFString value;
  if (item.findAndGetOFStringArray(tag, value).bad()) {
    return "<missing>";
  }
  return value.c_str();
}

int number(DcmItem& item, const DcmTagKey& tag) {
  Uint16 value = 0;
  if (item.findAndGetUint16(tag, value).bad()) {
    return -1;
  }
  return value;
}

// Stored pixel values after decompression, as integers (signed where PixelRepresentation is 1).
struct Stored {
  int width = 0;
  int height = 0;
  int bitsAllocated = 0;
  std::vector<int> values;
};

Stored stored(const fs::path& path) {
  ensureDecoders();
  auto file = load(path);
  DcmDataset& ds = *file->getDataset();
  const OFCondition status = ds.chooseRepresentation(EXS_LittleEndianExplicit, nullptr);
  if (status.bad()) {
    throw std::runtime_error("cannot decompress " + path.string() + ": " + status.text());
  }
  Stored out;
  out.width = number(ds, DCM_Columns);
  out.height = number(ds, DCM_Rows);
  out.bitsAllocated = number(ds, DCM_BitsAllocated);
  const bool isSigned = number(ds, DCM_PixelRepresentation) == 1;
  const std::size_t n = static_cast<std::size_t>(out.width) * static_cast<std::size_t>(out.height);
  out.values.resize(n);
  if (out.bitsAllocated == 8) {
    const Uint8* data = nullptr;
    if (ds.findAndGetUint8Array(DCM_PixelData, data).bad() || data == nullptr) {
      throw std::runtime_error("no 8-bit pixel data in " + path.string());
    }
    for (std::size_t i = 0; i < n; ++i) {
      out.values[i] = data[i];
    }
  } else {
    const Uint16* data = nullptr;
    if (ds.findAndGetUint16Array(DCM_PixelData, data).bad() || data == nullptr) {
      throw std::runtime_error("no 16-bit pixel data in " + path.string());
    }
    for (std::size_t i = 0; i < n; ++i) {
      out.values[i] =
          isSigned ? static_cast<int>(static_cast<std::int16_t>(data[i])) : static_cast<int>(data[i]);
    }
  }
  return out;
}

// Display-oriented samples in [0, 1] (MONOCHROME2, 12- or 8-bit stored values).
std::vector<double> normalised(const Stored& s) {
  const double maxValue = s.bitsAllocated == 8 ? 255.0 : 4095.0;
  std::vector<double> v(s.values.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = s.values[i] / maxValue;
  }
  return v;
}

double mean(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) {
    sum += x;
  }
  return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
}

double laplacianVariance(const std::vector<double>& v, int w, int h) {
  std::vector<double> lap;
  for (int y = 1; y + 1 < h; ++y) {
    for (int x = 1; x + 1 < w; ++x) {
      auto at = [&](int xx, int yy) {
        return v[static_cast<std::size_t>(yy) * static_cast<std::size_t>(w) + static_cast<std::size_t>(xx)];
      };
      lap.push_back(at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
    }
  }
  const double m = mean(lap);
  double sum = 0.0;
  for (double l : lap) {
    sum += (l - m) * (l - m);
  }
  return sum / static_cast<double>(lap.size());
}

// Median absolute value of what a 3x3 mean filter removes: noise, robust to the few pixels on edges.
double highFrequencyResidual(const std::vector<double>& v, int w, int h) {
  std::vector<double> residuals;
  for (int y = 1; y + 1 < h; ++y) {
    for (int x = 1; x + 1 < w; ++x) {
      double local = 0.0;
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          local += v[static_cast<std::size_t>(y + dy) * static_cast<std::size_t>(w) +
                     static_cast<std::size_t>(x + dx)];
        }
      }
      const double r =
          v[static_cast<std::size_t>(y) * static_cast<std::size_t>(w) + static_cast<std::size_t>(x)] -
          local / 9.0;
      residuals.push_back(std::abs(r));
    }
  }
  std::nth_element(residuals.begin(), residuals.begin() + static_cast<std::ptrdiff_t>(residuals.size() / 2),
                   residuals.end());
  return residuals[residuals.size() / 2];
}

double fractionAtOrBelow(const std::vector<double>& v, double t) {
  return static_cast<double>(std::count_if(v.begin(), v.end(), [t](double x) { return x <= t; })) /
         static_cast<double>(v.size());
}

double fractionAtOrAbove(const std::vector<double>& v, double t) {
  return static_cast<double>(std::count_if(v.begin(), v.end(), [t](double x) { return x >= t; })) /
         static_cast<double>(v.size());
}

double median(std::vector<double> values) {
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2),
                   values.end());
  return values[values.size() / 2];
}

// Median step between neighbours across 8x8 block borders over the median step inside blocks: about 1 for a
// natural image, clearly more for a coarsely quantised JPEG (flat blocks, jumps at their borders).
double blockiness(const std::vector<double>& v, int w, int h) {
  std::vector<double> border;
  std::vector<double> inside;
  auto at = [&](int x, int y) {
    return v[static_cast<std::size_t>(y) * static_cast<std::size_t>(w) + static_cast<std::size_t>(x)];
  };
  for (int y = 0; y + 1 < h; ++y) {
    for (int x = 0; x + 1 < w; ++x) {
      (x % 8 == 7 ? border : inside).push_back(std::abs(at(x + 1, y) - at(x, y)));
      (y % 8 == 7 ? border : inside).push_back(std::abs(at(x, y + 1) - at(x, y)));
    }
  }
  return median(border) / std::max(1e-6, median(inside));
}

double meanAbsDiff(const Image& a, const Image& b) {
  double sum = 0.0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) {
    sum += std::abs(static_cast<double>(a.pixels[i]) - b.pixels[i]);
  }
  return sum / static_cast<double>(a.pixels.size());
}

bool validUid(const std::string& uid) {
  if (uid.empty() || uid.size() > 64 || uid.front() == '.' || uid.back() == '.') {
    return false;
  }
  std::stringstream parts(uid);
  std::string part;
  while (std::getline(parts, part, '.')) {
    if (part.empty() || part.find_first_not_of("0123456789") != std::string::npos ||
        (part.size() > 1 && part[0] == '0')) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST(SynthTest, SameSeedGivesByteIdenticalArchiveAndAnotherSeedDoesNot) {
  TempDir tmp;
  SynthOptions o = smallOptions(tmp.file("a"));
  o.encodings = {Encoding::Mono2Uint16,       Encoding::Mono1Uint16,    Encoding::Mono2Uint8,
                 Encoding::Mono2Int16Rescale, Encoding::BigEndian,      Encoding::Deflate,
                 Encoding::JpegLossless,      Encoding::JpegLsLossless, Encoding::Rle,
                 Encoding::JpegBaseline};
  o.degradedFraction = 0.5;
  const auto first = writeSyntheticArchive(o);
  o.outputDir = tmp.file("b");
  const auto second = writeSyntheticArchive(o);
  const auto filesA = allFiles(tmp.file("a"));
  const auto filesB = allFiles(tmp.file("b"));
  ASSERT_EQ(filesA.size(), first.size() + 2);  // + manifest.csv and manifest.json
  EXPECT_EQ(filesA, filesB);

  o.outputDir = tmp.file("c");
  o.seed = 43;
  const auto third = writeSyntheticArchive(o);
  const auto filesC = allFiles(tmp.file("c"));
  int differing = 0;
  for (std::size_t i = 0; i < first.size(); ++i) {
    const std::string pixelsA = filesA.at(first[i].file);
    const std::string pixelsC = filesC.at(third[i].file);
    differing += pixelsA != pixelsC ? 1 : 0;
    EXPECT_NE(first[i].sopInstanceUid, third[i].sopInstanceUid);
  }
  EXPECT_EQ(differing, static_cast<int>(first.size()));
}

TEST(SynthTest, ImagesDoNotDependOnHowManyPatientsAreGenerated) {
  TempDir tmp;
  SynthOptions o = smallOptions(tmp.file("two"));
  const auto two = writeSyntheticArchive(o);
  o.outputDir = tmp.file("three");
  o.patients = 3;
  const auto three = writeSyntheticArchive(o);
  ASSERT_EQ(three.size(), two.size() * 3 / 2);
  for (const SynthImage& row : two) {
    EXPECT_EQ(readBytes(tmp.path() / "two" / row.file), readBytes(tmp.path() / "three" / row.file))
        << row.file;
  }
}

TEST(SynthTest, CountsLayoutAndManifests) {
  TempDir tmp;
  SynthOptions o = smallOptions(tmp.file("frontal"));
  o.patients = 3;
  o.studiesPerPatient = 2;
  o.lateralViews = false;
  const auto rows = writeSyntheticArchive(o);
  ASSERT_EQ(rows.size(), 6u);
  std::set<std::string> patients;
  for (const SynthImage& row : rows) {
    EXPECT_TRUE(row.view == "PA" || row.view == "AP") << row.view;
    EXPECT_EQ(row.file, row.patientId + "/" + std::to_string(row.studyIndex) + "_" + row.view + ".dcm");
    EXPECT_TRUE(fs::is_regular_file(tmp.path() / "frontal" / row.file)) << row.file;
    patients.insert(row.patientId);
  }
  EXPECT_EQ(patients.size(), 3u);

  // manifest.csv: a header and one row per image, the columns in SynthImage's order.
  std::ifstream csv(tmp.path() / "frontal" / "manifest.csv");
  std::vector<std::string> lines;
  for (std::string line; std::getline(csv, line);) {
    lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), rows.size() + 1);
  EXPECT_EQ(lines[0].rfind("file,patientId,studyInstanceUid,seriesInstanceUid,sopInstanceUid,studyDate,", 0),
            0u);
  EXPECT_EQ(lines[1].rfind(rows[0].file + "," + rows[0].patientId + "," + rows[0].studyInstanceUid, 0), 0u);

  std::ifstream jsonFile(tmp.path() / "frontal" / "manifest.json");
  const auto json = nlohmann::json::parse(jsonFile);
  ASSERT_TRUE(json.is_array());
  ASSERT_EQ(json.size(), rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(json[i]["sopInstanceUid"], rows[i].sopInstanceUid);
    EXPECT_EQ(json[i]["rows"], rows[i].rows);
    EXPECT_EQ(json[i]["encoding"], comcl::imaging::toString(rows[i].encoding));
    EXPECT_EQ(json[i]["lesion"], rows[i].lesion);
  }

  o.outputDir = tmp.file("both");
  o.lateralViews = true;
  const auto withLateral = writeSyntheticArchive(o);
  ASSERT_EQ(withLateral.size(), 12u);
  EXPECT_EQ(std::count_if(withLateral.begin(), withLateral.end(),
                          [](const SynthImage& r) { return r.view == "LL"; }),
            6);
}

TEST(SynthTest, EveryFileLoadsAndCarriesTheAttributes) {
  TempDir tmp;
  SynthOptions o = smallOptions(tmp.file("a"));
  o.patients = 4;
  o.encodings = {Encoding::Mono2Uint16,       Encoding::Mono1Uint16,    Encoding::Mono2Uint8,
                 Encoding::Mono2Int16Rescale, Encoding::BigEndian,      Encoding::Deflate,
                 Encoding::JpegLossless,      Encoding::JpegLsLossless, Encoding::Rle};
  const auto rows = writeSyntheticArchive(o);
  std::set<std::string> modalities;
  for (const SynthImage& row : rows) {
    SCOPED_TRACE(row.file);
    auto file = load(tmp.path() / "a" / row.file);
    DcmDataset& ds = *file->getDataset();
    DcmMetaInfo& meta = *file->getMetaInfo();
    EXPECT_EQ(text(meta, DCM_MediaStorageSOPInstanceUID), row.sopInstanceUid);
    EXPECT_EQ(text(meta, DCM_MediaStorageSOPClassUID), text(ds, DCM_SOPClassUID));
    EXPECT_EQ(text(ds, DCM_SOPInstanceUID), row.sopInstanceUid);
    EXPECT_EQ(text(ds, DCM_StudyInstanceUID), row.studyInstanceUid);
    EXPECT_EQ(text(ds, DCM_SeriesInstanceUID), row.seriesInstanceUid);
    EXPECT_EQ(text(ds, DCM_PatientID), row.patientId);
    EXPECT_NE(text(ds, DCM_PatientName), "<missing>");
    EXPECT_TRUE(text(ds, DCM_PatientSex) == "F" || text(ds, DCM_PatientSex) == "M");
    EXPECT_EQ(text(ds, DCM_PatientBirthDate).size(), 8u);
    EXPECT_EQ(text(ds, DCM_StudyDate), row.studyDate);
    EXPECT_EQ(text(ds, DCM_StudyTime).size(), 6u);
    EXPECT_NE(text(ds, DCM_AccessionNumber), "<missing>");
    EXPECT_EQ(text(ds, DCM_StudyID), std::to_string(row.studyIndex + 1));
    EXPECT_EQ(text(ds, DCM_SeriesNumber), row.view == "LL" ? "2" : "1");
    EXPECT_EQ(text(ds, DCM_InstanceNumber), "1");
    EXPECT_EQ(text(ds, DCM_Modality), row.modality);
    EXPECT_EQ(text(ds, DCM_SOPClassUID), row.modality == "DX" ? UID_DigitalXRayImageStorageForPresentation
                                                              : UID_ComputedRadiographyImageStorage);
    modalities.insert(row.modality);
    EXPECT_EQ(text(ds, DCM_BodyPartExamined), "CHEST");
    EXPECT_EQ(text(ds, DCM_ViewPosition), row.view);
    EXPECT_NE(text(ds, DCM_ImageLaterality), "<missing>");
    EXPECT_NE(text(ds, DCM_PixelSpacing), "<missing>");
    EXPECT_NE(text(ds, DCM_ImagerPixelSpacing), "<missing>");
    EXPECT_EQ(number(ds, DCM_Rows), row.rows);
    EXPECT_EQ(number(ds, DCM_Columns), row.cols);
    EXPECT_EQ(number(ds, DCM_SamplesPerPixel), 1);
    EXPECT_EQ(text(ds, DCM_PhotometricInterpretation),
              row.encoding == Encoding::Mono1Uint16 ? "MONOCHROME1" : "MONOCHROME2");
    if (row.encoding == Encoding::Mono2Uint8 || row.encoding == Encoding::JpegBaseline) {
      EXPECT_EQ(number(ds, DCM_BitsAllocated), 8);
      EXPECT_EQ(number(ds, DCM_BitsStored), 8);
    } else {
      EXPECT_EQ(number(ds, DCM_BitsAllocated), 16);
      EXPECT_EQ(number(ds, DCM_BitsStored), 12);
      EXPECT_EQ(number(ds, DCM_HighBit), 11);
      EXPECT_NE(text(ds, DCM_WindowCenter), "<missing>");
      EXPECT_NE(text(ds, DCM_WindowWidth), "<missing>");
    }
    EXPECT_EQ(number(ds, DCM_PixelRepresentation), row.encoding == Encoding::Mono2Int16Rescale ? 1 : 0);
    if (row.encoding == Encoding::Mono2Int16Rescale) {
      EXPECT_EQ(text(ds, DCM_RescaleSlope), "2");
    }
    // The manifest's ground truth and the file agree on the transfer syntax.
    EXPECT_EQ(text(meta, DCM_TransferSyntaxUID), row.transferSyntaxUid);
  }
  EXPECT_EQ(modalities.size(), 2u) << "CR and DX are mixed by patient";
}

TEST(SynthTest, UidsAreValidUniqueAndSharedWithinAStudy) {
  TempDir tmp;
  SynthOptions o = smallOptions(tmp.file("a"));
  o.patients = 3;
  o.studiesPerPatient = 3;
  const auto rows = writeSyntheticArchive(o);
  std::set<std::string> sops;
  std::set<std::string> series;
  std::map<std::pair<std::string, int>, std::string> studyOf;
  for (const SynthImage& row : rows) {
    for (const std::string& uid : {row.studyInstanceUid, row.seriesInstanceUid, row.sopInstanceUid}) {
      EXPECT_TRUE(validUid(uid)) << uid;
    }
    EXPECT_TRUE(sops.insert(row.sopInstanceUid).second) << "duplicate SOP Instance UID";
    EXPECT_TRUE(series.insert(row.seriesInstanceUid).second) << "duplicate Series Instance UID";
    const auto key = std::make_pair(row.patientId, row.studyIndex);
    const auto [it, inserted] = studyOf.emplace(key, row.studyInstanceUid);
    if (!inserted) {
      EXPECT_EQ(it->second, row.studyInstanceUid) << "views of one study share the Study Instance UID";
    }
  }
  std::set<std::string> studies;
  for (const auto& entry : studyOf) {
    studies.insert(entry.second);
  }
  EXPECT_EQ(studies.size(), 9u) << "every study has its own Study Instance UID";
}

TEST(SynthTest, StudiesFollowEachOtherDaysToWeeksApart) {
  TempDir tmp;
  SynthOptions o = smallOptions(tmp.file("a"));
  o.studiesPerPatient = 4;
  o.lateralViews = false;
  const auto rows = writeSyntheticArchive(o);
  auto days = [](const std::string& date) {  // days since 2000-01-01, coarse but monotonic enough
    const int y = std::stoi(date.substr(0, 4));
    const int m = std::stoi(date.substr(4, 2));
    const int d = std::stoi(date.substr(6, 2));
    static const int before[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return (y - 2000) * 365 + (y - 1997) / 4 + before[m - 1] + (leap && m > 2 ? 1 : 0) + d;
  };
  for (std::size_t i = 1; i < rows.size(); ++i) {
    if (rows[i].patientId == rows[i - 1].patientId) {
      const int gap = days(rows[i].studyDate) - days(rows[i - 1].studyDate);
      EXPECT_GE(gap, 3) << rows[i - 1].studyDate << " -> " << rows[i].studyDate;
      EXPECT_LE(gap, 45) << rows[i - 1].studyDate << " -> " << rows[i].studyDate;
    }
  }
}

TEST(SynthTest, EveryEncodingDecodesWithDcmtkToTheSamePixels) {
  ensureDecoders();
  TempDir tmp;
  auto archive = [&](Encoding encoding) {
    SynthOptions o = smallOptions(tmp.file(comcl::imaging::toString(encoding)));
    o.patients = 1;
    o.studiesPerPatient = 1;
    o.degradedFraction = 0.0;
    o.encodings = {encoding};
    return writeSyntheticArchive(o);
  };
  const auto reference = archive(Encoding::Mono2Uint16);
  ASSERT_EQ(reference.size(), 2u);
  for (Encoding encoding :
       {Encoding::Mono2Uint16, Encoding::Mono1Uint16, Encoding::Mono2Uint8, Encoding::Mono2Int16Rescale,
        Encoding::BigEndian, Encoding::Deflate, Encoding::JpegLossless, Encoding::JpegLsLossless,
        Encoding::Rle, Encoding::JpegBaseline}) {
    const std::string name = comcl::imaging::toString(encoding);
    const auto rows = archive(encoding);
    ASSERT_EQ(rows.size(), reference.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      SCOPED_TRACE(name + " " + rows[i].file);
      EXPECT_EQ(rows[i].encoding, encoding);
      const fs::path path = tmp.path() / name / rows[i].file;
      DicomImage image(path.string().c_str());
      ASSERT_EQ(image.getStatus(), EIS_Normal) << DicomImage::getString(image.getStatus());
      EXPECT_EQ(static_cast<int>(image.getWidth()), reference[i].cols);
      EXPECT_EQ(static_cast<int>(image.getHeight()), reference[i].rows);
      EXPECT_NE(image.getOutputData(8), nullptr);

      const Stored ref = stored(tmp.path() / "Mono2Uint16" / reference[i].file);
      const Stored got = stored(path);
      ASSERT_EQ(got.values.size(), ref.values.size());
      double absDiff = 0.0;
      int mismatches = 0;
      for (std::size_t k = 0; k < ref.values.size(); ++k) {
        int expected = ref.values[k];
        switch (encoding) {
          case Encoding::Mono1Uint16:
            expected = 4095 - ref.values[k];  // inverted stored values
            break;
          case Encoding::Mono2Int16Rescale:
            expected = ref.values[k] - 2048;  // signed; 2 * stored + 4096 = 2 * reference
            break;
          case Encoding::Mono2Uint8:
          case Encoding::JpegBaseline:
            expected = static_cast<int>(std::lround(ref.values[k] * 255.0 / 4095.0));
            break;
          default:
            break;
        }
        absDiff += std::abs(got.values[k] - expected);
        mismatches += std::abs(got.values[k] - expected) > 1 ? 1 : 0;
      }
      if (encoding == Encoding::JpegBaseline) {
        EXPECT_LT(absDiff / static_cast<double>(ref.values.size()), 4.0) << "lossy, but close (of 255)";
      } else {
        EXPECT_EQ(mismatches, 0) << "lossless encodings keep every stored value";
      }
      if (encoding == Encoding::Mono2Int16Rescale) {
        double minValue = 0.0;
        double maxValue = 0.0;
        ASSERT_TRUE(image.getMinMaxValues(minValue, maxValue));
        EXPECT_GE(minValue, 0.0) << "modality values are positive after the rescale";
        EXPECT_LE(maxValue, 8190.0);
        EXPECT_LT(*std::min_element(got.values.begin(), got.values.end()), 0) << "stored values are signed";
      }
    }
  }
}

TEST(SynthTest, LesionChangesOnlyItsNeighbourhood) {
  const int size = 128;
  const double lx = 0.70;
  const double ly = 0.40;
  const double lr = 0.05;
  const Image clean = renderChest(size, size, "PA", false, lx, ly, lr, 11);
  const Image lesion = renderChest(size, size, "PA", true, lx, ly, lr, 11);
  ASSERT_EQ(clean.pixels.size(), lesion.pixels.size());
  double inside = 0.0;
  double total = 0.0;
  double signedSum = 0.0;
  double maxDiff = 0.0;
  double maxDistance = 0.0;
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const double d = static_cast<double>(lesion.at(x, y)) - clean.at(x, y);
      const double distance = std::hypot(x + 0.5 - lx * size, y + 0.5 - ly * size) / (lr * size);
      total += std::abs(d);
      signedSum += d;
      if (distance < 1.6) {
        inside += std::abs(d);
      }
      if (std::abs(d) > maxDiff) {
        maxDiff = std::abs(d);
        maxDistance = distance;
      }
    }
  }
  ASSERT_GT(total, 0.0);
  EXPECT_GT(inside / total, 0.99);
  EXPECT_GT(signedSum, 0.0) << "a lesion is denser (brighter) than lung";
  EXPECT_LT(maxDistance, 1.0) << "the strongest change is inside the lesion";
  EXPECT_GT(maxDiff, 0.08) << "the lesion is visible";
}

TEST(SynthTest, ManifestLesionPointsAtABrightSpot) {
  TempDir tmp;
  SynthOptions o = smallOptions(tmp.file("a"));
  o.size = 160;
  o.patients = 3;
  o.lesionFraction = 1.0;
  o.degradedFraction = 0.0;
  o.encodings = {Encoding::Mono2Uint16};
  const auto rows = writeSyntheticArchive(o);
  for (const SynthImage& row : rows) {
    SCOPED_TRACE(row.file);
    ASSERT_TRUE(row.lesion);
    EXPECT_GT(row.lesionX, 0.1);
    EXPECT_LT(row.lesionX, 0.9);
    EXPECT_GT(row.lesionY, 0.1);
    EXPECT_LT(row.lesionY, 0.9);
    EXPECT_GT(row.lesionRadius, 0.0);
    const Stored s = stored(tmp.path() / "a" / row.file);
    const auto v = normalised(s);
    const double cx = row.lesionX * s.width;
    const double cy = row.lesionY * s.height;
    const double r = row.lesionRadius * s.height;
    double core = 0.0;
    double ring = 0.0;
    int nc = 0;
    int nr = 0;
    for (int y = 0; y < s.height; ++y) {
      for (int x = 0; x < s.width; ++x) {
        const double d = std::hypot(x + 0.5 - cx, y + 0.5 - cy) / r;
        const double value =
            v[static_cast<std::size_t>(y) * static_cast<std::size_t>(s.width) + static_cast<std::size_t>(x)];
        if (d < 0.5) {
          core += value;
          ++nc;
        } else if (d > 1.6 && d < 2.2) {
          ring += value;
          ++nr;
        }
      }
    }
    ASSERT_GT(nc, 0);
    ASSERT_GT(nr, 0);
    EXPECT_GT(core / nc, ring / nr + 0.03);
  }
}

TEST(SynthTest, SamePatientImagesAreCloserThanOtherPatients) {
  const int size = 96;
  for (const std::string view : {"PA", "LL"}) {
    const int width = view == "LL" ? 80 : size;
    std::vector<Image> first;
    std::vector<Image> second;
    for (std::uint64_t patient = 1; patient <= 4; ++patient) {
      first.push_back(renderChest(width, size, view, false, 0, 0, 0, patient * 1000, patient * 1000 + 1));
      second.push_back(renderChest(width, size, view, false, 0, 0, 0, patient * 1000, patient * 1000 + 2));
    }
    for (std::size_t p = 0; p < first.size(); ++p) {
      const double same = meanAbsDiff(first[p], second[p]);
      EXPECT_GT(same, 0.0) << "studies differ a little (positioning, exposure)";
      for (std::size_t q = 0; q < first.size(); ++q) {
        if (q != p) {
          EXPECT_LT(same, meanAbsDiff(first[p], second[q])) << view << " patient " << p << " vs " << q;
        }
      }
    }
  }
}

TEST(SynthTest, RenderIsDeterministicInRangeAndChecksItsArguments) {
  const Image a = renderChest(100, 120, "AP", true, 0.3, 0.4, 0.04, 5);
  const Image b = renderChest(100, 120, "AP", true, 0.3, 0.4, 0.04, 5);
  ASSERT_EQ(a.width, 100);
  ASSERT_EQ(a.height, 120);
  EXPECT_EQ(a.pixels, b.pixels);
  const auto [lo, hi] = std::minmax_element(a.pixels.begin(), a.pixels.end());
  EXPECT_GE(*lo, 0.0f);
  EXPECT_LE(*hi, 1.0f);
  EXPECT_GT(*hi - *lo, 0.5f) << "air, lung, soft tissue and bone span the range";
  EXPECT_NE(renderChest(100, 120, "PA", false, 0, 0, 0, 5).pixels,
            renderChest(100, 120, "AP", false, 0, 0, 0, 5).pixels);
  EXPECT_THROW(renderChest(100, 120, "XX", false, 0, 0, 0, 5), std::invalid_argument);
  EXPECT_THROW(renderChest(0, 120, "PA", false, 0, 0, 0, 5), std::invalid_argument);
}

TEST(SynthTest, DegradationsMoveTheStatisticsTheExpectedWay) {
  TempDir tmp;
  auto archive = [&](const std::string& name, Degradation degradation) {
    SynthOptions o = smallOptions(tmp.file(name));
    o.size = 128;
    o.patients = 2;
    o.studiesPerPatient = 1;
    o.encodings = {Encoding::Mono2Uint16};
    o.degradedFraction = degradation == Degradation::None ? 0.0 : 1.0;
    o.degradations = {degradation};
    return writeSyntheticArchive(o);
  };
  const auto clean = archive("clean", Degradation::None);
  for (Degradation degradation :
       {Degradation::Blur, Degradation::Noise, Degradation::Underexposed, Degradation::Overexposed,
        Degradation::LowResolution, Degradation::JpegArtefacts}) {
    const std::string name = comcl::imaging::toString(degradation);
    const auto rows = archive(name, degradation);
    ASSERT_EQ(rows.size(), clean.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      SCOPED_TRACE(name + " " + rows[i].file);
      EXPECT_EQ(rows[i].degradation, degradation);
      EXPECT_EQ(clean[i].degradation, Degradation::None);
      const Stored c = stored(tmp.path() / "clean" / clean[i].file);
      const Stored d = stored(tmp.path() / name / rows[i].file);
      const auto cv = normalised(c);
      const auto dv = normalised(d);
      // Clean images use the range without clipping, so that clipping means something.
      EXPECT_LT(fractionAtOrBelow(cv, 0.0), 0.01);
      EXPECT_LT(fractionAtOrAbove(cv, 1.0), 0.01);
      switch (degradation) {
        case Degradation::Blur:
          EXPECT_LT(laplacianVariance(dv, d.width, d.height),
                    0.25 * laplacianVariance(cv, c.width, c.height));
          EXPECT_NEAR(mean(dv), mean(cv), 0.02);
          break;
        case Degradation::Noise:
          EXPECT_GT(highFrequencyResidual(dv, d.width, d.height),
                    3.0 * highFrequencyResidual(cv, c.width, c.height));
          EXPECT_NEAR(mean(dv), mean(cv), 0.03);
          break;
        case Degradation::Underexposed:  // radiographic: light, flat, noisy, dense parts saturate white
          EXPECT_GT(mean(dv), mean(cv) + 0.15);
          EXPECT_GT(fractionAtOrAbove(dv, 1.0), 0.01) << "clipped at white";
          EXPECT_GT(highFrequencyResidual(dv, d.width, d.height),
                    3.0 * highFrequencyResidual(cv, c.width, c.height));
          break;
        case Degradation::Overexposed:  // radiographic: dark, lungs and air burnt out to black
          EXPECT_LT(mean(dv), mean(cv) - 0.1);
          EXPECT_GT(fractionAtOrBelow(dv, 0.0), 0.15) << "clipped at black";
          break;
        case Degradation::LowResolution:
          EXPECT_EQ(d.height, c.height / 4);
          EXPECT_EQ(d.width, c.width / 4);
          EXPECT_EQ(rows[i].rows, d.height);
          EXPECT_EQ(rows[i].cols, d.width);
          break;
        case Degradation::JpegArtefacts:
          EXPECT_EQ(rows[i].encoding, Encoding::JpegBaseline);
          EXPECT_EQ(rows[i].transferSyntaxUid, "1.2.840.10008.1.2.4.50");
          EXPECT_EQ(d.bitsAllocated, 8);
          EXPECT_GT(blockiness(dv, d.width, d.height), 1.5 * blockiness(cv, c.width, c.height));
          break;
        case Degradation::None:
          break;
      }
    }
  }
}

TEST(SynthTest, NamesRoundTripAndUnknownNamesThrow) {
  for (Degradation d : {Degradation::None, Degradation::Blur, Degradation::Noise, Degradation::Underexposed,
                        Degradation::Overexposed, Degradation::LowResolution, Degradation::JpegArtefacts}) {
    EXPECT_EQ(comcl::imaging::degradationFromString(comcl::imaging::toString(d)), d);
  }
  for (Encoding e :
       {Encoding::Mono2Uint16, Encoding::Mono1Uint16, Encoding::Mono2Uint8, Encoding::Mono2Int16Rescale,
        Encoding::BigEndian, Encoding::Deflate, Encoding::JpegLossless, Encoding::JpegLsLossless,
        Encoding::Rle, Encoding::JpegBaseline}) {
    EXPECT_EQ(comcl::imaging::encodingFromString(comcl::imaging::toString(e)), e);
  }
  EXPECT_THROW(comcl::imaging::degradationFromString("Smudge"), std::invalid_argument);
  EXPECT_THROW(comcl::imaging::encodingFromString("Jpeg2000"), std::invalid_argument);
}

TEST(SynthTest, WriteErrorsNameThePath) {
  TempDir tmp;
  const fs::path blocker = tmp.path() / "not_a_directory";
  std::ofstream(blocker) << "x";
  SynthOptions o = smallOptions((blocker / "archive").string());
  try {
    writeSyntheticArchive(o);
    FAIL() << "expected std::runtime_error";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find(blocker.string()), std::string::npos) << error.what();
  }
  o.outputDir = tmp.file("ok");
  o.size = 8;
  EXPECT_THROW(writeSyntheticArchive(o), std::invalid_argument);
}
