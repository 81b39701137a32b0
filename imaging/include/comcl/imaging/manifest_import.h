// PNG data sets described by a manifest.csv (one row per image) into the comcl index and image cache, and
// the manifest's label columns into instance-scope labels. Used by `comcl import-manifest` and
// `comcl import-labels`; docs/data.md says what becomes what.
//
// Pixels take the DICOM ingest's path after decoding: the image takes the cache's channels (toChannels), is
// letterboxed into the cache square (letterbox), written to a cache slot and flushed, then the row and its
// quality (measureQuality, assessQuality) are stored in one transaction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "comcl/imaging/quality_flags.h"
#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"

namespace comcl::imaging {

// --- CSV (RFC 4180)

struct CsvRecord {
  std::size_t row = 0;   // 1-based data row (the header is not counted)
  std::size_t line = 0;  // 1-based line of the file where the record starts
  std::vector<std::string> fields;
};

struct CsvProblem {
  std::size_t row = 0;
  std::size_t line = 0;
  std::string message;
};

struct CsvTable {
  std::vector<std::string> header;  // names trimmed of surrounding blanks
  std::vector<CsvRecord> records;   // data records with exactly as many fields as the header
  // Records left out of `records`: a field count other than the header's ("ragged"), or a quoted field
  // still open at the end of the input.
  std::vector<CsvProblem> problems;

  // Position of the first column with that name.
  std::optional<std::size_t> column(std::string_view name) const;
};

// Fields are separated by commas and records by LF or CRLF. A field in double quotes may hold commas,
// line breaks and doubled quotes (""). Lenient where RFC 4180 is silent: a quote inside an unquoted field
// is kept as a character, text after a closing quote is appended, blank lines are skipped, a UTF-8 byte
// order mark is dropped and the last record needs no line break. The first record is the header.
CsvTable parseCsv(std::string_view text);
// Reads and parses a file; throws std::runtime_error naming the path when it cannot be read.
CsvTable readCsvFile(const std::string& path);

// --- labels

// One label of one record.
struct ManifestLabel {
  std::string finding;
  double value = 0;  // 1 positive, 0 negative, -1 uncertain
};

struct ManifestLabels {
  // Every finding the manifest defines, sorted.
  std::vector<std::string> findings;
  // Labels of each record of the table, in record order (empty: the record is unlabelled).
  std::vector<std::vector<ManifestLabel>> perRecord;
  // Cells that were not understood (one line each, with the row); those cells give no label.
  std::vector<std::string> warnings;
};

// Labels from the manifest's label columns:
// - `label_<name>`: finding <name>; 1 and 0 (also written 1.0, 0.0) and -1 (uncertain) are labels, an
//   empty cell gives none, anything else a warning.
// - `labels`: names separated by '|'; each distinct name over the whole manifest is a finding, 1 where a
//   record lists it and 0 where it lists only others. An empty cell or "unlabelled" gives no label at all.
//   A finding that also has a label_<name> column is taken from that column only.
ManifestLabels extractLabels(const CsvTable& table);
// Whether the table has any label column.
bool hasLabelColumns(const CsvTable& table);

// --- counts shared by both reports

struct FindingCounts {
  std::int64_t positives = 0;
  std::int64_t negatives = 0;
  std::int64_t uncertain = 0;
};

struct RowFailure {
  std::size_t row = 0;
  std::size_t line = 0;
  std::string imageId;  // empty when the row has none
  std::string reason;
};

// The manifest itself is unusable: no manifest.csv, or required columns missing (the message names them).
class ManifestError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// --- import-manifest

struct ManifestImportOptions {
  bool replaceExisting = false;  // false: rows already in the index are left as they are
  QualityThresholds quality;     // every imported image gets a flag and reasons from these
};

struct ManifestImportReport {
  std::string manifestPath;
  std::string resourcePrefix;  // "manifest:<folder name>/"
  std::string labelSource;     // "manifest:<manifest path>"
  std::size_t rows = 0;        // data records in the manifest, good or bad
  std::int64_t imported = 0;   // new rows
  std::int64_t unchanged = 0;  // already in the index, left alone
  std::int64_t replaced = 0;   // already in the index, replaced (replaceExisting)
  std::vector<RowFailure> failures;
  std::optional<std::string> studyDateColumn;  // the column study dates came from, if any

  // Over the manifest's rows now in the index (imported, unchanged and replaced), as stored.
  std::int64_t images = 0;
  std::int64_t patients = 0;
  std::int64_t patientsWithSeveralImages = 0;  // patients with >= 2 images
  std::int64_t studies = 0;
  std::map<std::string, std::int64_t> views;       // "" = missing
  std::map<std::string, std::int64_t> modalities;  // "" = missing
  std::map<std::string, std::int64_t> metadataIssues;
  std::map<std::string, std::int64_t> qualityFlags;
  std::map<std::string, std::int64_t> qualityReasons;

  // Labels of those rows.
  std::map<std::string, FindingCounts> labels;  // by finding
  std::int64_t labelledRows = 0;
  std::int64_t unlabelledRows = 0;
  std::int64_t labelsWritten = 0;  // new or changed in the index (unchanged labels are not rewritten)
  std::vector<std::string> warnings;
};

// A data set's manifest, read and checked before anything is written.
struct Manifest {
  std::string folder;
  std::string path;  // FOLDER/manifest.csv
  CsvTable table;
};

// Reads FOLDER/manifest.csv. Throws ManifestError when it is missing or empty, or lacks one of the required
// columns patient_id, image_id and file (the message names every missing one).
Manifest readManifest(const std::string& folder);

// Imports the manifest's rows: each becomes the instance "manifest:<folder name>/<image_id>" with source
// FOLDER/<file>; study_id, view, modality and a YYYYMMDD date column are used when present. Rows that
// cannot be imported (empty patient_id/image_id/file, missing file, not a PNG, duplicate image_id, ragged)
// are reported and skipped; the others are kept. Storage errors propagate.
ManifestImportReport importManifest(const Manifest& manifest, storage::Index& index,
                                    storage::ImageCache& cache, const ManifestImportOptions& options = {});
// readManifest, then importManifest.
ManifestImportReport importManifest(const std::string& folder, storage::Index& index,
                                    storage::ImageCache& cache, const ManifestImportOptions& options = {});

// --- import-labels

struct LabelImportOptions {
  // Manifest column with the path to match against the end of each index row's source; empty: dicom_file
  // when the manifest has it, else file.
  std::string matchColumn;
};

struct LabelImportReport {
  std::string manifestPath;
  std::string labelSource;  // "manifest:<manifest path>"
  std::string matchColumn;
  std::size_t rows = 0;
  std::int64_t matchedRows = 0;
  std::int64_t instancesLabelled = 0;           // index rows that received labels
  std::vector<RowFailure> failures;             // rows that match nothing, ragged rows, empty match cells
  std::map<std::string, FindingCounts> labels;  // over the labelled index rows
  std::int64_t labelledRows = 0;
  std::int64_t unlabelledRows = 0;
  std::int64_t labelsWritten = 0;
  std::vector<std::string> warnings;
};

// Stores the manifest's labels on index rows built from DICOM (`comcl index`): a manifest row labels every
// decoded index row whose source path ends with the row's match column (whole path components). Throws
// ManifestError for a missing manifest, a missing match column or a manifest without label columns.
LabelImportReport importLabels(const std::string& manifestPath, storage::Index& index,
                               const LabelImportOptions& options = {});

}  // namespace comcl::imaging
