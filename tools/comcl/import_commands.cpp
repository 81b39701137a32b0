// comcl import-manifest / import-labels / to-dicom: PNG data sets described by a manifest.csv, manifest
// labels for images indexed from DICOM, and PNG sets written out as DICOM files (imaging/manifest_import.h
// and imaging/png_to_dicom.h do the work; this file parses and prints).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "comcl/imaging/manifest_import.h"
#include "comcl/imaging/png_to_dicom.h"
#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "commands.h"

namespace fs = std::filesystem;

namespace comcl::cli {
namespace {

// One line per finding: "  COVID-19: 126 positive, 88 negative[, 2 uncertain]", names aligned.
void printLabels(const std::map<std::string, imaging::FindingCounts>& labels, std::int64_t labelledRows,
                 std::int64_t unlabelledRows, std::int64_t written, const std::string& source) {
  std::cout << "labels:        " << labels.size() << " finding(s), " << labelledRows << " labelled row(s), "
            << unlabelledRows << " unlabelled; " << written << " new or changed in the index (source "
            << source << ")\n";
  std::size_t width = 0;
  for (const auto& entry : labels)
    width = std::max(width, entry.first.size() + 1);
  for (const auto& [finding, c] : labels) {
    std::cout << "  " << std::left << std::setw(static_cast<int>(width)) << (finding + ":") << std::right
              << " " << c.positives << " positive, " << c.negatives << " negative";
    if (c.uncertain > 0)
      std::cout << ", " << c.uncertain << " uncertain";
    std::cout << "\n";
  }
}

void printFailures(const char* command, const std::vector<imaging::RowFailure>& failures) {
  for (const imaging::RowFailure& f : failures) {
    std::cerr << "comcl " << command << ": row " << f.row << " (line " << f.line << ")"
              << (f.imageId.empty() ? "" : ", image_id " + f.imageId) << ": " << f.reason << "\n";
  }
}

void printWarnings(const char* command, const std::vector<std::string>& warnings) {
  for (const std::string& w : warnings)
    std::cerr << "comcl " << command << ": warning: " << w << "\n";
}

int runImportManifest(const std::string& folder, const std::string& dbPath, std::string cachePath,
                      const storage::CacheFormat& format, bool replace) {
  const auto started = std::chrono::steady_clock::now();
  imaging::Manifest manifest;
  try {  // before the database and cache are opened, so that a bad manifest creates nothing
    manifest = imaging::readManifest(folder);
  } catch (const imaging::ManifestError& e) {
    std::cerr << "comcl import-manifest: " << e.what() << "\n";
    return 2;
  }
  if (cachePath.empty())
    cachePath = dbPath + ".images";
  storage::Index index(dbPath);
  storage::ImageCache cache(cachePath, format);
  imaging::ManifestImportOptions options;
  options.replaceExisting = replace;
  const imaging::ManifestImportReport r = imaging::importManifest(manifest, index, cache, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  std::cout << "imported " << r.manifestPath << " (" << r.rows << " rows) in " << std::fixed
            << std::setprecision(2) << seconds << " s\n"
            << std::defaultfloat << "  this run:    " << r.imported << " imported, " << r.unchanged
            << " unchanged, " << r.replaced << " replaced, " << r.failures.size() << " failed\n"
            << "  instances:   " << r.resourcePrefix << "<image_id>\n"
            << "  database:    " << dbPath << "\n"
            << "  image cache: " << cachePath << " (" << storage::describe(format) << ")\n"
            << "  study dates: "
            << (r.studyDateColumn ? "column " + *r.studyDateColumn : std::string("(no YYYYMMDD column)"))
            << "\n"
            << "manifest rows in the index:\n"
            << "  images:      " << r.images << "\n"
            << "  patients:    " << r.patients << " (" << r.patientsWithSeveralImages
            << " with >= 2 images)\n"
            << "  studies:     " << r.studies << "\n";
  printCounts("views", r.views);
  printCounts("modalities", r.modalities);
  printCounts("quality", r.qualityFlags);
  if (!r.qualityReasons.empty())
    printCounts("reasons", r.qualityReasons);
  if (!r.metadataIssues.empty())
    printCounts("metadata", r.metadataIssues);
  printLabels(r.labels, r.labelledRows, r.unlabelledRows, r.labelsWritten, r.labelSource);
  printWarnings("import-manifest", r.warnings);
  printFailures("import-manifest", r.failures);
  return r.failures.empty() ? 0 : 1;
}

int runImportLabels(const std::string& manifest, const std::string& dbPath, const std::string& match) {
  if (!fs::is_regular_file(dbPath)) {
    std::cerr << "comcl import-labels: no such database: " << dbPath << "\n";
    return 2;
  }
  storage::Index index(dbPath);
  imaging::LabelImportOptions options;
  options.matchColumn = match;
  imaging::LabelImportReport r;
  try {
    r = imaging::importLabels(manifest, index, options);
  } catch (const imaging::ManifestError& e) {
    std::cerr << "comcl import-labels: " << e.what() << "\n";
    return 2;
  }
  std::cout << "labels from " << r.manifestPath << " (" << r.rows << " rows)\n"
            << "  matched:     " << r.matchedRows << " rows to " << r.instancesLabelled
            << " labelled index rows by " << r.matchColumn << ", " << r.failures.size() << " rows failed\n"
            << "  database:    " << dbPath << "\n";
  printLabels(r.labels, r.labelledRows, r.unlabelledRows, r.labelsWritten, r.labelSource);
  printWarnings("import-labels", r.warnings);
  printFailures("import-labels", r.failures);
  return r.failures.empty() ? 0 : 1;
}

// The body of POST /comcl/labels, one study a line:
// [{"StudyInstanceUID": uid, "Labels": {"finding": 0|1, ...}}, ...]
std::string labelsBody(const std::vector<imaging::StudyLabelRow>& rows) {
  std::string body = "[";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::ordered_json row = {{"StudyInstanceUID", rows[i].studyInstanceUid},
                                        {"Labels", rows[i].labels}};
    body += (i > 0 ? ",\n " : "\n ") + row.dump();
  }
  return body + "\n]\n";
}

int runToDicom(const std::string& folder, const std::string& out, std::size_t limit, const std::string& tag,
               const std::string& labelsOut, const std::vector<std::string>& only) {
  const auto started = std::chrono::steady_clock::now();
  imaging::PngToDicomOptions options;
  options.outputDir = out;
  options.limit = limit;
  options.datasetTag = tag;
  imaging::PngToDicomReport r;
  try {
    r = imaging::convertToDicom(folder, options);
  } catch (const imaging::ManifestError& e) {
    std::cerr << "comcl to-dicom: " << e.what() << "\n";
    return 2;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::set<std::string> patients, studies, findings;
  std::map<std::string, std::int64_t> views;
  for (const imaging::DicomFromPng& image : r.written) {
    patients.insert(image.patientId);
    studies.insert(image.studyInstanceUid);
    ++views[image.viewPosition.value_or("")];
    for (const imaging::ManifestLabel& label : image.labels)
      findings.insert(label.finding);
  }
  std::cout << "converted " << r.manifestPath << " (" << r.considered << " of " << r.rows << " rows) in "
            << std::fixed << std::setprecision(2) << seconds << " s\n"
            << std::defaultfloat << "  written:     " << r.written.size() << " DICOM files, "
            << r.failures.size() << " failed\n"
            << "  folder:      " << r.outputDir << "/" << r.datasetTag << "-<patient_id>/<image_id>.dcm\n"
            << "  as:          Secondary Capture, 8-bit MONOCHROME2, Explicit VR Little Endian\n"
            << "  patients:    " << patients.size() << " (PatientID " << r.datasetTag << "-<patient_id>)\n"
            << "  studies:     " << studies.size() << "\n"
            << "  study dates: " << r.dateSource << "\n";
  printCounts("views", views);
  int status = r.failures.empty() ? 0 : 1;
  if (!labelsOut.empty()) {
    const std::set<std::string> wanted(only.begin(), only.end());
    for (const std::string& name : wanted) {
      if (findings.count(name) == 0)
        r.warnings.push_back("--label " + name + ": no written image has that label");
    }
    const std::vector<imaging::StudyLabelRow> rows = imaging::studyLabelRows(r, wanted);
    std::ofstream file(labelsOut, std::ios::binary | std::ios::trunc);
    file << labelsBody(rows);
    file.close();
    if (!file) {
      std::cerr << "comcl to-dicom: cannot write " << labelsOut << "\n";
      status = 2;
    } else {
      std::cout << "  labels:      " << rows.size() << " studies with labels -> " << labelsOut
                << " (body of POST /comcl/labels)\n";
    }
  }
  printWarnings("to-dicom", r.warnings);
  printFailures("to-dicom", r.failures);
  return status;
}

}  // namespace

void addImportCommands(CLI::App& app, std::vector<Command>& commands) {
  // Options live as long as the process: the commands run after parsing, from main().
  struct Options {
    std::string manifestFolder, manifestDb = "comcl.sqlite", manifestCache;
    storage::CacheFormat manifestFormat;
    bool manifestReplace = false;
    std::string labelsManifest, labelsDb, labelsMatch;
    std::string dicomFolder, dicomOut, dicomTag, dicomLabelsOut;
    std::size_t dicomLimit = 0;
    std::vector<std::string> dicomLabels;
  };
  static Options o;

  CLI::App* manifest = app.add_subcommand(
      "import-manifest", "Import a PNG data set described by FOLDER/manifest.csv, with its labels");
  manifest->add_option("folder", o.manifestFolder, "Folder holding manifest.csv and the images")->required();
  addIndexTargetOptions(manifest, o.manifestDb, o.manifestCache, o.manifestFormat);
  manifest->add_flag("--replace", o.manifestReplace, "Re-read and replace rows that are already imported");

  CLI::App* labels = app.add_subcommand(
      "import-labels", "Store a manifest's label columns on images indexed from DICOM (comcl index)");
  labels->add_option("manifest", o.labelsManifest, "manifest.csv with label_<name> or labels columns")
      ->required();
  labels->add_option("--db", o.labelsDb, "SQLite index database")->required();
  labels
      ->add_option("--match", o.labelsMatch,
                   "Manifest column whose path ends each index row's source (default: dicom_file, else file)")
      ->check(CLI::IsMember({"file", "dicom_file"}));

  CLI::App* toDicom = app.add_subcommand(
      "to-dicom", "Write a PNG data set described by FOLDER/manifest.csv as DICOM files (for storescu)");
  toDicom->add_option("folder", o.dicomFolder, "Folder holding manifest.csv and the images")->required();
  toDicom->add_option("--out", o.dicomOut, "Folder for the DICOM files")->required();
  toDicom->add_option("--limit", o.dicomLimit, "Only the first N manifest rows (0: all)");
  toDicom->add_option("--tag", o.dicomTag,
                      "Prefix of PatientID (default: the folder name up to its first '_', e.g. covid)");
  CLI::Option* labelsOut = toDicom->add_option(
      "--labels-out", o.dicomLabelsOut, "Write the studies' labels as a JSON body for POST /comcl/labels");
  toDicom->add_option("--label", o.dicomLabels, "Only this finding in --labels-out (repeatable)")
      ->needs(labelsOut);

  commands.push_back({manifest, [] {
                        return runImportManifest(o.manifestFolder, o.manifestDb, o.manifestCache,
                                                 o.manifestFormat, o.manifestReplace);
                      }});
  commands.push_back({labels, [] { return runImportLabels(o.labelsManifest, o.labelsDb, o.labelsMatch); }});
  commands.push_back({toDicom, [] {
                        return runToDicom(o.dicomFolder, o.dicomOut, o.dicomLimit, o.dicomTag,
                                          o.dicomLabelsOut, o.dicomLabels);
                      }});
}

}  // namespace comcl::cli
