// The comcl command-line tool, run as a process: exit codes, what it prints, what it writes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "comcl/imaging/png.h"
#include "comcl_process.h"
#include "test_dicom.h"

namespace {

namespace fs = std::filesystem;
using comcl::testing::TempDir;
const fs::path kData = COMCL_SHARED_DATA;

using comcl::testing::contains;
using comcl::testing::ProcessResult;
using comcl::testing::readText;

ProcessResult comcl(const std::string& arguments) {
  return comcl::testing::runComcl(arguments);
}

TEST(Cli, DecodesTheRealMonochrome1FilmAndSaysWhatItDid) {
  const fs::path rg1 = kData / "dicom_samples/RG1_CR_chest_PA_uncompressed.dcm";
  if (!fs::exists(rg1))
    GTEST_SKIP() << "missing " << rg1;
  TempDir dir;
  const ProcessResult r = comcl("decode " + rg1.string() + " --out " + dir.file("rg1.png"));
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "Little Endian Explicit (1.2.840.10008.1.2.1)")) << r.out;
  EXPECT_TRUE(contains(r.out, "MONOCHROME1 (inverted so that bright = dense)")) << r.out;
  EXPECT_TRUE(contains(r.out, "1841 x 1955")) << r.out;
  EXPECT_TRUE(contains(r.out, "15 of 16 bits")) << r.out;
  EXPECT_TRUE(contains(r.out, "slope 1, intercept 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "header window, center 15000, width 30000")) << r.out;
  EXPECT_TRUE(contains(r.out, "image 241 x 256 at (7, 0)")) << r.out;
  const comcl::imaging::Image png = comcl::imaging::readPng(dir.file("rg1.png"));
  EXPECT_EQ(png.width, 256);
  EXPECT_EQ(png.height, 256);
  EXPECT_EQ(png.channels, 1);
}

TEST(Cli, NativeSizeAnd16BitOutput) {
  const fs::path mhh = kData / "mhh_covid_cxr/dicom/024e7871/fff13f3a.dcm";
  if (!fs::exists(mhh))
    GTEST_SKIP() << "missing " << mhh;
  TempDir dir;
  const ProcessResult r =
      comcl("decode " + mhh.string() + " --out " + dir.file("m.png") + " --size 0 --bits 16");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  const comcl::imaging::Image png = comcl::imaging::readPng(dir.file("m.png"));
  EXPECT_EQ(png.width, 256);
  EXPECT_EQ(png.height, 276);
  EXPECT_TRUE(contains(r.out, "percentile window")) << r.out;
}

TEST(Cli, SaysInOneLineWhyItCannotDecode) {
  TempDir dir;
  const fs::path j2k = kData / "dicom_samples/RG1_J2KI_CR_chest_PA.dcm";
  if (fs::exists(j2k)) {
    const ProcessResult r = comcl("decode " + j2k.string() + " --out " + dir.file("x.png"));
    EXPECT_EQ(r.exitCode, 2);
    EXPECT_TRUE(contains(r.err, "unsupported: JPEG 2000")) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(dir.file("x.png")));
  }
  const std::string text = "not dicom at all\n";
  dir.write("notes.dcm", std::vector<char>(text.begin(), text.end()));
  ProcessResult r = comcl("decode " + dir.file("notes.dcm") + " --out " + dir.file("y.png"));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_TRUE(contains(r.err, "failed: not a DICOM file")) << r.err;

  dir.write("sr.dcm",
            comcl::testing::toBytes(*comcl::testing::makeNonImage("1.2.840.10008.5.1.4.1.1.88.11")));
  r = comcl("decode " + dir.file("sr.dcm") + " --out " + dir.file("z.png"));
  EXPECT_EQ(r.exitCode, 3);
  EXPECT_TRUE(contains(r.err, "skipped: not an image: BasicTextSRStorage")) << r.err;
}

TEST(Cli, IndexesAFolderReportsEveryProblemAndLeavesKnownFilesAlone) {
  const fs::path mhh = kData / "mhh_covid_cxr/dicom/042f06a9";
  if (!fs::exists(mhh))
    GTEST_SKIP() << "missing " << mhh;
  TempDir dir;
  const fs::path archive = fs::path(dir.path()) / "archive";
  fs::create_directories(archive / "real");
  int real = 0;
  for (const auto& entry : fs::directory_iterator(mhh)) {
    fs::create_symlink(entry.path(), archive / "real" / entry.path().filename());  // by path, not copied
    ++real;
  }
  const std::vector<char> bytes = comcl::testing::toBytes(*comcl::testing::makeImage({}));
  dir.write("archive/truncated.dcm", std::vector<char>(bytes.begin(), bytes.begin() + 300));
  dir.write("archive/report.dcm",
            comcl::testing::toBytes(*comcl::testing::makeNonImage("1.2.840.10008.5.1.4.1.1.104.1")));

  const std::string db = dir.file("index.sqlite");
  ProcessResult r = comcl("index " + archive.string() + " --db " + db + " --size 64 --jobs 2");
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, std::to_string(real + 2) + " new, 0 replaced, 0 already indexed, 0 errors"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "images:      " + std::to_string(real) + " decoded")) << r.out;
  EXPECT_TRUE(contains(r.out, "patients:    1\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "truncated.dcm: failed: truncated DICOM file")) << r.out;
  EXPECT_TRUE(contains(r.out, "report.dcm: skipped: not an image: EncapsulatedPDFStorage")) << r.out;
  EXPECT_TRUE(fs::exists(db + ".images"));

  r = comcl("index " + archive.string() + " --db " + db + " --size 64");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "0 new, 0 replaced, " + std::to_string(real + 2) + " already indexed"))
      << r.out;

  r = comcl("index " + archive.string() + " --db " + db + " --size 128");
  EXPECT_NE(r.exitCode, 0) << "a cache of another size must be refused, not overwritten";
  EXPECT_TRUE(contains(r.err, "comcl:")) << r.err;
}

TEST(Cli, SynthesisesAnArchiveThatIndexesCompletely) {
  TempDir dir;
  ProcessResult r =
      comcl("synth --out " + dir.file("synth") + " --patients 2 --studies 2 --size 128 --seed 5");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "wrote 8 images for 2 patients")) << r.out;
  const std::string manifest = readText(dir.file("synth/manifest.csv"));
  EXPECT_EQ(std::count(manifest.begin(), manifest.end(), '\n'), 9);  // header + 8 rows
  r = comcl("index " + dir.file("synth") + " --db " + dir.file("s.sqlite") + " --size 64");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "images:      8 decoded")) << r.out;
  EXPECT_TRUE(contains(r.out, "patients:    2\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "studies:     4\n")) << r.out;

  r = comcl("synth --out " + dir.file("bad") + " --patients 1 --encodings Mono2Uint16,NoSuchEncoding");
  EXPECT_NE(r.exitCode, 0);
  EXPECT_TRUE(contains(r.err, "unknown encoding 'NoSuchEncoding'")) << r.err;
}

TEST(Cli, RejectsBadArguments) {
  ProcessResult r = comcl("index /nonexistent/comcl/folder --db /tmp/never.sqlite");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_TRUE(contains(r.err, "is not a directory")) << r.err;
  r = comcl("decode");
  EXPECT_NE(r.exitCode, 0);
  r = comcl("");
  EXPECT_NE(r.exitCode, 0);
  r = comcl("synth --out /tmp/x --patients 0");
  EXPECT_NE(r.exitCode, 0);
}

}  // namespace
