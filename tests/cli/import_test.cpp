// comcl import-manifest / import-labels run as a user would, on the real MHH set (PNG + DICOM copies).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "comcl/imaging/png.h"
#include "comcl_process.h"
#include "temp_dir.h"

namespace {

namespace fs = std::filesystem;
using comcl::testing::TempDir;
const fs::path kMhh = fs::path(COMCL_SHARED_DATA) / "mhh_covid_cxr";

using CommandResult = comcl::testing::ProcessResult;

CommandResult comclRun(const std::string& arguments) {
  return comcl::testing::runComcl(arguments);
}
bool has(const std::string& text, const std::string& part) {
  return comcl::testing::contains(text, part);
}

// Numbers from reading mhh_covid_cxr/manifest.csv with Python's csv module: 243 rows, 71 patients (37 with
// two or more images), one study per image, AP 194 / PA 49, CR 212 / DX 31; label_covid19 is 1 everywhere,
// label_icu_ever 186 x 1 and 57 x 0, label_death 48 x 1 and 195 x 0.
TEST(CliImport, MhhPngsThenTheSameLabelsOnItsDicomIndex) {
  if (!fs::exists(kMhh / "manifest.csv") || !fs::is_directory(kMhh / "dicom"))
    GTEST_SKIP() << "missing " << kMhh;
  TempDir dir;
  const CommandResult png = comclRun("import-manifest " + kMhh.string() + " --db " + dir.file("png.sqlite"));
  ASSERT_EQ(png.exitCode, 0) << png.out << png.err;
  EXPECT_TRUE(has(png.out, "(243 rows)")) << png.out;
  EXPECT_TRUE(has(png.out, "this run:    243 imported, 0 unchanged, 0 replaced, 0 failed")) << png.out;
  EXPECT_TRUE(has(png.out, "instances:   manifest:mhh_covid_cxr/<image_id>")) << png.out;
  EXPECT_TRUE(has(png.out, "image cache: " + dir.file("png.sqlite") + ".images (256x256 8-bit grey)"))
      << png.out;
  EXPECT_TRUE(has(png.out, "study dates: column dicom_study_date_synthetic")) << png.out;
  EXPECT_TRUE(has(png.out, "images:      243\n")) << png.out;
  EXPECT_TRUE(has(png.out, "patients:    71 (37 with >= 2 images)")) << png.out;
  EXPECT_TRUE(has(png.out, "studies:     243\n")) << png.out;
  EXPECT_TRUE(has(png.out, "views:       AP 194, PA 49")) << png.out;
  EXPECT_TRUE(has(png.out, "modalities:  CR 212, DX 31")) << png.out;
  EXPECT_TRUE(has(png.out, "quality:     ")) << png.out;
  EXPECT_TRUE(
      has(png.out, "labels:        3 finding(s), 243 labelled row(s), 0 unlabelled; 729 new or changed"))
      << png.out;
  EXPECT_TRUE(has(png.out, "covid19:  243 positive, 0 negative")) << png.out;
  EXPECT_TRUE(has(png.out, "icu_ever: 186 positive, 57 negative")) << png.out;
  EXPECT_TRUE(has(png.out, "death:    48 positive, 195 negative")) << png.out;
  EXPECT_EQ(png.err, "");

  // Again: nothing changes.
  const CommandResult again =
      comclRun("import-manifest " + kMhh.string() + " --db " + dir.file("png.sqlite"));
  ASSERT_EQ(again.exitCode, 0) << again.err;
  EXPECT_TRUE(has(again.out, "this run:    0 imported, 243 unchanged, 0 replaced, 0 failed")) << again.out;
  EXPECT_TRUE(has(again.out, "0 new or changed in the index")) << again.out;

  // The DICOM copies through `comcl index`, then the manifest's labels matched by dicom_file.
  const CommandResult index =
      comclRun("index " + (kMhh / "dicom").string() + " --db " + dir.file("dicom.sqlite") + " --jobs 2");
  ASSERT_EQ(index.exitCode, 0) << index.err;
  const CommandResult labels =
      comclRun("import-labels " + (kMhh / "manifest.csv").string() + " --db " + dir.file("dicom.sqlite"));
  ASSERT_EQ(labels.exitCode, 0) << labels.out << labels.err;
  EXPECT_TRUE(has(labels.out, "labels from " + (kMhh / "manifest.csv").string() + " (243 rows)"))
      << labels.out;
  EXPECT_TRUE(
      has(labels.out, "matched:     243 rows to 243 labelled index rows by dicom_file, 0 rows failed"))
      << labels.out;
  EXPECT_TRUE(has(labels.out, "icu_ever: 186 positive, 57 negative")) << labels.out;
  EXPECT_TRUE(has(labels.out, "death:    48 positive, 195 negative")) << labels.out;
  EXPECT_EQ(labels.err, "");
}

TEST(CliImport, BadManifestsAndBadRows) {
  TempDir dir;
  const fs::path set = dir.path() / "set";
  fs::create_directories(set);
  // No manifest at all.
  CommandResult r = comclRun("import-manifest " + set.string() + " --db " + dir.file("x.sqlite"));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_TRUE(has(r.err, "no manifest.csv in " + set.string())) << r.err;

  // A required column missing: exit 2, the column named, no database created.
  std::ofstream(set / "manifest.csv") << "patient_id,file,view\np1,a.png,PA\n";
  r = comclRun("import-manifest " + set.string() + " --db " + dir.file("x.sqlite"));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_TRUE(has(r.err, "missing required column: image_id")) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("x.sqlite")));

  // One good row and one whose file is missing: the good one lands, the bad one is reported, exit 1.
  comcl::imaging::Image image(48, 40);
  for (std::size_t i = 0; i < image.pixels.size(); ++i)
    image.pixels[i] = static_cast<float>(i % 97) / 96.0f;
  comcl::imaging::writePng((set / "a.png").string(), image);
  std::ofstream(set / "manifest.csv") << "patient_id,image_id,file,label_x\np1,a,a.png,1\np1,b,b.png,0\n";
  r = comclRun("import-manifest " + set.string() + " --db " + dir.file("x.sqlite") + " --size 64");
  EXPECT_EQ(r.exitCode, 1) << r.out << r.err;
  EXPECT_TRUE(has(r.out, "this run:    1 imported, 0 unchanged, 0 replaced, 1 failed")) << r.out;
  EXPECT_TRUE(has(r.out, "x: 1 positive, 0 negative")) << r.out;
  EXPECT_TRUE(has(r.err, "comcl import-manifest: row 2 (line 3), image_id b: missing file")) << r.err;

  // import-labels: missing match column, unknown database, rows that match nothing.
  r = comclRun("import-labels " + (set / "manifest.csv").string() + " --db " + dir.file("x.sqlite") +
               " --match dicom_file");
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_TRUE(has(r.err, "missing column dicom_file")) << r.err;
  r = comclRun("import-labels " + (set / "manifest.csv").string() + " --db " + dir.file("absent.sqlite"));
  EXPECT_EQ(r.exitCode, 2);
  EXPECT_TRUE(has(r.err, "no such database")) << r.err;
  r = comclRun("import-labels " + (set / "manifest.csv").string() + " --db " + dir.file("x.sqlite"));
  EXPECT_EQ(r.exitCode, 1);
  EXPECT_TRUE(has(r.out, "matched:     1 rows to 1 labelled index rows by file, 1 rows failed")) << r.out;
  EXPECT_TRUE(has(r.err, "row 2 (line 3), image_id b: no decoded image in the index comes from b.png"))
      << r.err;
}

}  // namespace
