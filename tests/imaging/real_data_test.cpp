// The real radiographs in ../shared/data: every DICOM file is decoded, or (JPEG 2000 only) reported as
// unsupported; the MONOCHROME1 film renders with dark lungs and bright bone; metadata matches the manifest.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "comcl/imaging/decode.h"

namespace comcl::imaging {
namespace {

namespace fs = std::filesystem;
const fs::path kData = COMCL_SHARED_DATA;

std::vector<fs::path> dicomFiles() {
  std::vector<fs::path> files;
  if (!fs::exists(kData))
    return files;
  for (const auto& entry : fs::recursive_directory_iterator(kData)) {
    if (entry.is_regular_file() && entry.path().extension() == ".dcm")
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

double meanOver(const Image& image, const Rect& content, double x0, double y0, double x1, double y1) {
  double sum = 0;
  int n = 0;
  for (int y = content.y + static_cast<int>(y0 * content.height);
       y < content.y + static_cast<int>(y1 * content.height); ++y) {
    for (int x = content.x + static_cast<int>(x0 * content.width);
         x < content.x + static_cast<int>(x1 * content.width); ++x) {
      sum += image.at(x, y);
      ++n;
    }
  }
  return n ? sum / n : 0;
}

TEST(RealData, EveryDicomFileDecodesOrIsReportedAsJpeg2000) {
  const auto files = dicomFiles();
  if (files.empty())
    GTEST_SKIP() << "no shared data at " << kData;
  ASSERT_GE(files.size(), 240u);
  DecodeOptions options;
  options.size = 256;
  int decoded = 0;
  for (const auto& file : files) {
    DecodeResult r = decodeFile(file.string(), options);
    if (r.outcome == DecodeOutcome::Unsupported) {
      EXPECT_NE(r.reason.find("JPEG 2000"), std::string::npos) << file << ": " << r.reason;
      EXPECT_EQ(r.metadata.transferSyntaxUid.rfind("1.2.840.10008.1.2.4.9", 0), 0u) << file;
      continue;
    }
    ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << file << ": " << r.reason;
    EXPECT_EQ(r.image.width, 256);
    EXPECT_EQ(r.image.height, 256);
    EXPECT_EQ(std::max(r.report.content.width, r.report.content.height), 256) << file;
    ++decoded;
  }
  EXPECT_EQ(decoded, static_cast<int>(files.size()) - 1);  // all but the JPEG 2000 copy of RG1
}

TEST(RealData, Monochrome1FilmShowsDarkLungsAndBrightBone) {
  const fs::path rg1 = kData / "dicom_samples" / "RG1_CR_chest_PA_uncompressed.dcm";
  if (!fs::exists(rg1))
    GTEST_SKIP() << "missing " << rg1;
  DecodeOptions options;
  options.size = 256;
  DecodeResult r = decodeFile(rg1.string(), options);
  ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << r.reason;
  EXPECT_EQ(r.metadata.photometric, "MONOCHROME1");
  EXPECT_EQ(r.metadata.bitsStored, 15);
  EXPECT_TRUE(r.report.inverted);
  EXPECT_EQ(r.report.windowSource, "header window");
  const Rect& c = r.report.content;
  const double rightLung = meanOver(r.image, c, 0.20, 0.25, 0.35, 0.45);
  const double leftLung = meanOver(r.image, c, 0.65, 0.25, 0.80, 0.45);
  const double spine = meanOver(r.image, c, 0.46, 0.20, 0.54, 0.60);
  const double abdomen = meanOver(r.image, c, 0.20, 0.88, 0.80, 0.97);
  EXPECT_LT(rightLung + 0.05, spine);
  EXPECT_LT(leftLung + 0.05, spine);
  EXPECT_LT(rightLung + 0.05, abdomen);
  EXPECT_LT(leftLung + 0.05, abdomen);
}

TEST(RealData, MhhMetadataMatchesTheManifest) {
  const fs::path manifest = kData / "mhh_covid_cxr" / "manifest.csv";
  if (!fs::exists(manifest))
    GTEST_SKIP() << "missing " << manifest;
  std::ifstream in(manifest);
  std::string line;
  std::getline(in, line);
  std::vector<std::string> header;
  {
    std::stringstream s(line);
    for (std::string cell; std::getline(s, cell, ',');)
      header.push_back(cell);
  }
  auto column = [&](const std::string& name) {
    return static_cast<std::size_t>(std::find(header.begin(), header.end(), name) - header.begin());
  };
  const std::size_t patient = column("patient_id"), view = column("view"), dicom = column("dicom_file"),
                    width = column("width"), height = column("height");
  ASSERT_LT(dicom, header.size());
  int checked = 0;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream s(line);
    for (std::string cell; std::getline(s, cell, ',');)
      cells.push_back(cell);
    if (cells.size() <= dicom || cells[dicom].empty())
      continue;
    DecodeResult r = decodeFile((kData / "mhh_covid_cxr" / cells[dicom]).string());
    ASSERT_EQ(r.outcome, DecodeOutcome::Decoded) << cells[dicom] << ": " << r.reason;
    EXPECT_EQ(r.metadata.patientId.value_or(""), cells[patient]);
    EXPECT_EQ(r.metadata.viewPosition.value_or(""), cells[view]);
    EXPECT_EQ(r.image.width, std::stoi(cells[width]));
    EXPECT_EQ(r.image.height, std::stoi(cells[height]));
    ++checked;
  }
  EXPECT_GE(checked, 240);
}

}  // namespace
}  // namespace comcl::imaging
