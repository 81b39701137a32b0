#include "comcl/imaging/manifest_import.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "comcl/imaging/ingest.h"
#include "comcl/imaging/png.h"
#include "comcl/imaging/quality.h"
#include "comcl/imaging/resize.h"
#include "comcl/storage/cache_key.h"
#include "manifest_fields.h"

namespace comcl::imaging {

namespace fs = std::filesystem;

namespace detail {

std::string trim(std::string_view s) {
  const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && blank(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && blank(s.back()))
    s.remove_suffix(1);
  return std::string(s);
}

std::string upper(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string lower(std::string s) {
  for (char& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string joined(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (const std::string& p : parts)
    out += (out.empty() ? "" : separator) + p;
  return out;
}

bool isYyyymmdd(std::string_view s) {
  if (s.size() != 8 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  const int month = std::atoi(std::string(s.substr(4, 2)).c_str());
  const int day = std::atoi(std::string(s.substr(6, 2)).c_str());
  return month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

// The trimmed cell of `record` in column `column`, "" when the table has no such column.
std::string cell(const CsvRecord& record, std::optional<std::size_t> column) {
  return column ? trim(record.fields[*column]) : std::string();
}

// The first column named like a date whose non-empty cells are all YYYYMMDD (at least one): manifests
// carry dates in many forms ("2020", "January 25, 2020", "03/09/20"), and only this one is a DICOM date.
std::optional<std::size_t> studyDateColumn(const CsvTable& table) {
  for (std::size_t c = 0; c < table.header.size(); ++c) {
    if (lower(table.header[c]).find("date") == std::string::npos)
      continue;
    std::size_t values = 0;
    bool allDates = true;
    for (const CsvRecord& r : table.records) {
      const std::string v = trim(r.fields[c]);
      if (v.empty())
        continue;
      ++values;
      allDates = allDates && isYyyymmdd(v);
    }
    if (values > 0 && allDates)
      return c;
  }
  return std::nullopt;
}

ManifestColumns::ManifestColumns(const CsvTable& table)
    : patient(table.column("patient_id")),
      image(table.column("image_id")),
      file(table.column("file")),
      study(table.column("study_id")),
      view(table.column("view")),
      modality(table.column("modality")),
      date(studyDateColumn(table)) {}

// Bit depth from the IHDR chunk (the signature, the chunk length and type, width, height, then the depth);
// 0 when the header cannot be read (readPng reports that).
int pngBitDepth(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char header[25] = {};
  if (!in.read(header, sizeof header))
    return 0;
  return static_cast<unsigned char>(header[24]);
}

std::string rowName(std::size_t row) {
  return "row " + std::to_string(row);
}

std::string emptyRequiredCells(const std::string& patient, const std::string& imageId,
                               const std::string& file) {
  std::vector<std::string> empty;
  if (patient.empty())
    empty.emplace_back("patient_id");
  if (imageId.empty())
    empty.emplace_back("image_id");
  if (file.empty())
    empty.emplace_back("file");
  return empty.empty() ? std::string() : "empty " + joined(empty, ", ");
}

std::optional<Image> readRowPng(const fs::path& path, std::string& error) {
  if (!fs::is_regular_file(path)) {
    error = "missing file " + path.string();
    return std::nullopt;
  }
  try {
    return readPng(path.string());
  } catch (const std::exception& e) {  // not a PNG, truncated, unsupported layout: the row is bad
    error = e.what();
    return std::nullopt;
  }
}

}  // namespace detail

using namespace detail;

namespace {

// A reserved cache slot that goes back to the free list unless a committed row took it.
class SlotReservation {
 public:
  explicit SlotReservation(storage::Index& index) : index_(index), slot_(index.reserveCacheSlot()) {}
  ~SlotReservation() {
    if (!taken_) {
      try {
        index_.releaseCacheSlot(slot_);
      } catch (...) {  // a failure here must not hide the one that unwound us
      }
    }
  }
  SlotReservation(const SlotReservation&) = delete;
  SlotReservation& operator=(const SlotReservation&) = delete;
  std::int64_t slot() const { return slot_; }
  void taken() { taken_ = true; }

 private:
  storage::Index& index_;
  std::int64_t slot_;
  bool taken_ = false;
};

void addIssues(std::map<std::string, std::int64_t>& counts, const std::string& issues) {
  std::size_t start = 0;
  while (start < issues.size()) {
    std::size_t end = issues.find("; ", start);
    if (end == std::string::npos)
      end = issues.size();
    if (end > start)
      ++counts[issues.substr(start, end - start)];
    start = end + 2;
  }
}

void count(std::map<std::string, FindingCounts>& counts, const std::vector<ManifestLabel>& labels) {
  for (const ManifestLabel& l : labels) {
    FindingCounts& c = counts[l.finding];
    if (l.value > 0.5)
      ++c.positives;
    else if (l.value < -0.5)
      ++c.uncertain;
    else
      ++c.negatives;
  }
}

// Writes the labels that the index does not already hold with the same value and source (so that a
// re-import leaves unchanged labels alone), in one transaction. Returns how many were written.
std::int64_t storeLabels(storage::Index& index, const std::vector<storage::LabelRecord>& wanted) {
  std::vector<storage::LabelRecord> changed;
  std::map<std::string, std::map<std::string, storage::LabelRecord>> stored;  // key -> finding -> label
  for (const storage::LabelRecord& label : wanted) {
    auto it = stored.find(label.key);
    if (it == stored.end()) {
      it = stored.emplace(label.key, std::map<std::string, storage::LabelRecord>{}).first;
      for (storage::LabelRecord& old : index.labels(label.scope, label.key))
        it->second.emplace(old.finding, std::move(old));
    }
    const auto old = it->second.find(label.finding);
    if (old == it->second.end() || old->second.value != label.value || old->second.source != label.source)
      changed.push_back(label);
  }
  if (!changed.empty())
    index.putLabels(changed);
  return static_cast<std::int64_t>(changed.size());
}

std::vector<storage::LabelRecord> labelRecords(const std::string& key,
                                               const std::vector<ManifestLabel>& labels,
                                               const std::string& source) {
  std::vector<storage::LabelRecord> out;
  for (const ManifestLabel& l : labels)
    out.push_back({"instance", key, l.finding, l.value, source});
  return out;
}

// The names in a `labels` cell; nullopt when the row is unlabelled (empty, or only "unlabelled").
std::optional<std::set<std::string>> listedNames(const std::string& text) {
  std::set<std::string> names;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find('|', start);
    if (end == std::string::npos)
      end = text.size();
    std::string name = trim(std::string_view(text).substr(start, end - start));
    if (!name.empty() && lower(name) != "unlabelled")
      names.insert(std::move(name));
    start = end + 1;
  }
  if (names.empty())
    return std::nullopt;
  return names;
}

constexpr std::string_view kLabelPrefix = "label_";

}  // namespace

// --- CSV

std::optional<std::size_t> CsvTable::column(std::string_view name) const {
  for (std::size_t c = 0; c < header.size(); ++c) {
    if (header[c] == name)
      return c;
  }
  return std::nullopt;
}

CsvTable parseCsv(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF")
    text.remove_prefix(3);
  CsvTable table;
  bool haveHeader = false;
  std::size_t row = 0;
  std::vector<std::string> fields;
  std::string field;
  bool inQuotes = false;
  bool fieldQuoted = false;  // the current field opened with a quote (a later quote is a character)
  std::size_t line = 1;
  std::size_t recordLine = 1;

  const auto endRecord = [&] {
    fields.push_back(std::move(field));
    field.clear();
    const bool blank = fields.size() == 1 && fields[0].empty() && !fieldQuoted;
    fieldQuoted = false;
    if (blank) {
      fields.clear();
      return;
    }
    if (!haveHeader) {
      for (const std::string& name : fields)
        table.header.push_back(trim(name));
      haveHeader = true;
    } else {
      ++row;
      if (fields.size() != table.header.size()) {
        table.problems.push_back({row, recordLine,
                                  "has " + std::to_string(fields.size()) + " fields, the header has " +
                                      std::to_string(table.header.size())});
      } else {
        table.records.push_back({row, recordLine, std::move(fields)});
      }
    }
    fields.clear();
  };

  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (inQuotes) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          inQuotes = false;
        }
      } else {
        if (c == '\n')
          ++line;
        field += c;
      }
      continue;
    }
    switch (c) {
      case '"':
        if (field.empty() && !fieldQuoted) {
          inQuotes = true;
          fieldQuoted = true;
        } else {
          field += c;
        }
        break;
      case ',':
        fields.push_back(std::move(field));
        field.clear();
        fieldQuoted = false;
        break;
      case '\r':
        if (i + 1 < text.size() && text[i + 1] == '\n')
          break;  // CRLF: the LF ends the record
        field += c;
        break;
      case '\n':
        endRecord();
        ++line;
        recordLine = line;
        break;
      default:
        field += c;
    }
  }
  if (inQuotes) {
    table.problems.push_back(
        {haveHeader ? row + 1 : 0, recordLine, "a quoted field is still open at the end of the file"});
  } else if (!fields.empty() || !field.empty() || fieldQuoted) {
    endRecord();  // the last record without a line break
  }
  return table;
}

CsvTable readCsvFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw std::runtime_error("cannot read " + path);
  return parseCsv(text.str());
}

// --- labels

bool hasLabelColumns(const CsvTable& table) {
  if (table.column("labels"))
    return true;
  return std::any_of(table.header.begin(), table.header.end(), [](const std::string& name) {
    return name.size() > kLabelPrefix.size() && name.compare(0, kLabelPrefix.size(), kLabelPrefix) == 0;
  });
}

ManifestLabels extractLabels(const CsvTable& table) {
  ManifestLabels out;
  out.perRecord.resize(table.records.size());

  std::map<std::string, std::size_t> labelColumns;  // finding -> column (the first of a name wins)
  for (std::size_t c = 0; c < table.header.size(); ++c) {
    const std::string& name = table.header[c];
    if (name.size() > kLabelPrefix.size() && name.compare(0, kLabelPrefix.size(), kLabelPrefix) == 0)
      labelColumns.emplace(name.substr(kLabelPrefix.size()), c);
  }

  // The `labels` column's vocabulary is every name any row lists: a row that lists other names is a
  // negative for this one.
  const std::optional<std::size_t> labelsColumn = table.column("labels");
  std::vector<std::optional<std::set<std::string>>> listed(table.records.size());
  std::set<std::string> vocabulary;
  if (labelsColumn) {
    for (std::size_t i = 0; i < table.records.size(); ++i) {
      listed[i] = listedNames(cell(table.records[i], labelsColumn));
      if (listed[i])
        vocabulary.insert(listed[i]->begin(), listed[i]->end());
    }
  }

  std::set<std::string> findings;
  for (const auto& [finding, column] : labelColumns)
    findings.insert(finding);
  findings.insert(vocabulary.begin(), vocabulary.end());
  out.findings.assign(findings.begin(), findings.end());

  for (std::size_t i = 0; i < table.records.size(); ++i) {
    const CsvRecord& record = table.records[i];
    std::vector<ManifestLabel>& labels = out.perRecord[i];
    for (const auto& [finding, column] : labelColumns) {
      const std::string text = cell(record, column);
      if (text.empty())
        continue;
      char* end = nullptr;
      const double value = std::strtod(text.c_str(), &end);
      if (*end != '\0' || (value != 0.0 && value != 1.0 && value != -1.0)) {
        out.warnings.push_back(rowName(record.row) + " (line " + std::to_string(record.line) +
                               "): " + table.header[column] + " '" + text + "' is not 0, 1 or -1; no label");
        continue;
      }
      labels.push_back({finding, value});
    }
    if (listed[i]) {
      for (const std::string& finding : vocabulary) {
        if (labelColumns.count(finding) == 0)
          labels.push_back({finding, listed[i]->count(finding) ? 1.0 : 0.0});
      }
    }
    std::sort(labels.begin(), labels.end(),
              [](const ManifestLabel& a, const ManifestLabel& b) { return a.finding < b.finding; });
  }
  return out;
}

// --- import-manifest

Manifest readManifest(const std::string& folder) {
  Manifest manifest;
  manifest.folder = folder;
  manifest.path = (fs::path(folder) / "manifest.csv").lexically_normal().string();
  if (!fs::is_regular_file(manifest.path))
    throw ManifestError("no manifest.csv in " + folder);
  manifest.table = readCsvFile(manifest.path);
  if (manifest.table.header.empty())
    throw ManifestError(manifest.path + ": empty file, no header");
  std::vector<std::string> missingColumns;
  for (const char* required : {"patient_id", "image_id", "file"}) {
    if (!manifest.table.column(required))
      missingColumns.emplace_back(required);
  }
  if (!missingColumns.empty()) {
    throw ManifestError(manifest.path + ": missing required column" + (missingColumns.size() > 1 ? "s" : "") +
                        ": " + joined(missingColumns, ", "));
  }
  return manifest;
}

ManifestImportReport importManifest(const std::string& folder, storage::Index& index,
                                    storage::ImageCache& cache, const ManifestImportOptions& options) {
  return importManifest(readManifest(folder), index, cache, options);
}

ManifestImportReport importManifest(const Manifest& manifest, storage::Index& index,
                                    storage::ImageCache& cache, const ManifestImportOptions& options) {
  const fs::path dir(manifest.folder);
  const CsvTable& table = manifest.table;
  ManifestImportReport report;
  report.manifestPath = manifest.path;
  // weakly_canonical: "." and a trailing slash still give the folder's own name.
  report.resourcePrefix = "manifest:" + fs::weakly_canonical(fs::absolute(dir)).filename().string() + "/";
  report.labelSource = "manifest:" + manifest.path;
  report.rows = table.records.size() + table.problems.size();
  for (const CsvProblem& p : table.problems)
    report.failures.push_back({p.row, p.line, "", p.message});

  const ManifestColumns columns(table);
  const auto patientColumn = columns.patient, imageColumn = columns.image, fileColumn = columns.file,
             studyColumn = columns.study, viewColumn = columns.view, modalityColumn = columns.modality,
             dateColumn = columns.date;
  if (dateColumn)
    report.studyDateColumn = table.header[*dateColumn];

  const ManifestLabels labels = extractLabels(table);
  report.warnings = labels.warnings;
  const int cacheSize = cache.format().size;

  struct Kept {
    storage::InstanceRecord record;
    std::optional<storage::QualityRecord> quality;
    std::size_t recordIndex;
  };
  std::vector<Kept> kept;
  std::map<std::string, std::size_t> rowOfId;  // resource id -> manifest row, to name duplicates

  for (std::size_t i = 0; i < table.records.size(); ++i) {
    const CsvRecord& r = table.records[i];
    const std::string patient = cell(r, patientColumn);
    const std::string imageId = cell(r, imageColumn);
    const std::string file = cell(r, fileColumn);
    const auto fail = [&](std::string reason) {
      report.failures.push_back({r.row, r.line, imageId, std::move(reason)});
    };

    if (const std::string empty = emptyRequiredCells(patient, imageId, file); !empty.empty()) {
      fail(empty);
      continue;
    }
    const std::string resourceId = report.resourcePrefix + imageId;
    if (const auto [it, added] = rowOfId.emplace(resourceId, r.row); !added) {
      fail("duplicate image_id (first in " + rowName(it->second) + ")");
      continue;
    }

    const std::optional<storage::InstanceRecord> existing = index.findInstance(resourceId);
    if (existing && !options.replaceExisting) {
      ++report.unchanged;
      kept.push_back({*existing, index.quality(existing->id), i});
      continue;
    }

    const fs::path path = (dir / file).lexically_normal();
    std::string pngError;
    const std::optional<Image> png = readRowPng(path, pngError);
    if (!png) {
      fail(pngError);
      continue;
    }
    const Image& image = *png;

    storage::InstanceRecord record;
    record.resourceId = resourceId;
    record.source = path.string();
    record.patientKey = patient;
    record.studyInstanceUid = cell(r, studyColumn);
    record.sopInstanceUid = imageId;
    std::vector<std::string> issues;
    if (record.studyInstanceUid.empty())
      issues.emplace_back("missing StudyInstanceUID");
    if (const std::string date = cell(r, dateColumn); isYyyymmdd(date))
      record.studyDate = date;
    else
      issues.emplace_back("missing StudyDate");
    if (const std::string modality = cell(r, modalityColumn); !modality.empty())
      record.modality = modality;
    else
      issues.emplace_back("missing Modality");
    // "" and "?" both mean nobody knows the view; training must not take them for a projection.
    const std::string view = upper(cell(r, viewColumn));
    if (view.empty())
      issues.emplace_back("missing ViewPosition");
    else if (view == "?")
      issues.emplace_back("unknown ViewPosition '?'");
    else
      record.viewPosition = view;
    record.metadataIssues = joined(issues, "; ");
    record.rows = image.height;
    record.cols = image.width;
    record.frames = 1;
    record.bitsStored = pngBitDepth(path.string());
    record.photometric = image.channels == 3 ? "RGB" : "MONOCHROME2";
    record.decodeState = storage::DecodeState::Decoded;
    const int cacheChannels = cache.format().channels;
    if (image.channels == 3 && cacheChannels == 1)
      record.decodeReason = "PNG colour converted to luminance";

    // The DICOM path's steps after decoding: the cache's channels, letterbox into the cache square, quantise.
    const Letterboxed boxed = letterbox(toChannels(image, cacheChannels), cacheSize);
    const std::vector<std::uint8_t> bytes = quantise(boxed.image, cache.format().bitsPerSample);
    SlotReservation slot(index);
    cache.write(slot.slot(), storage::cacheKey(resourceId), bytes.data());
    cache.flush();  // the pixels are durable before the row that refers to them commits
    record.cacheSlot = slot.slot();
    record.contentX = boxed.content.x;
    record.contentY = boxed.content.y;
    record.contentWidth = boxed.content.width;
    record.contentHeight = boxed.content.height;
    const storage::QualityRecord quality = qualityRecordOf(measureQuality(boxed.image, boxed.content),
                                                           image.height, image.width, options.quality);
    record.id = index.putInstanceWithQuality(record, quality);
    slot.taken();
    ++(existing ? report.replaced : report.imported);
    kept.push_back({record, quality, i});
  }
  std::sort(report.failures.begin(), report.failures.end(),
            [](const RowFailure& a, const RowFailure& b) { return a.row < b.row; });

  std::map<std::string, std::int64_t> imagesOfPatient;
  std::set<std::string> studies;
  std::vector<storage::LabelRecord> wanted;
  for (const Kept& k : kept) {
    const storage::InstanceRecord& rec = k.record;
    ++report.images;
    if (rec.patientKey && !rec.patientKey->empty())
      ++imagesOfPatient[*rec.patientKey];
    if (!rec.studyInstanceUid.empty())
      studies.insert(rec.studyInstanceUid);
    ++report.views[rec.viewPosition.value_or("")];
    ++report.modalities[rec.modality.value_or("")];
    addIssues(report.metadataIssues, rec.metadataIssues);
    ++report.qualityFlags[k.quality ? k.quality->flag.value_or("") : ""];
    if (k.quality)
      addIssues(report.qualityReasons, k.quality->reasons);

    const std::vector<ManifestLabel>& rowLabels = labels.perRecord[k.recordIndex];
    if (rowLabels.empty()) {
      ++report.unlabelledRows;
      continue;
    }
    ++report.labelledRows;
    count(report.labels, rowLabels);
    const auto records = labelRecords(rec.resourceId, rowLabels, report.labelSource);
    wanted.insert(wanted.end(), records.begin(), records.end());
  }
  report.patients = static_cast<std::int64_t>(imagesOfPatient.size());
  report.patientsWithSeveralImages = std::count_if(imagesOfPatient.begin(), imagesOfPatient.end(),
                                                   [](const auto& entry) { return entry.second >= 2; });
  report.studies = static_cast<std::int64_t>(studies.size());
  report.labelsWritten = storeLabels(index, wanted);
  return report;
}

// --- import-labels

namespace {

// Whether `path` ends with the whole components of `suffix` (both lexically normalised).
bool endsWithComponents(const fs::path& path, const fs::path& suffix) {
  std::vector<fs::path> a(path.begin(), path.end());
  std::vector<fs::path> b(suffix.begin(), suffix.end());
  if (b.empty() || b.size() > a.size())
    return false;
  return std::equal(b.rbegin(), b.rend(), a.rbegin());
}

}  // namespace

LabelImportReport importLabels(const std::string& manifestPath, storage::Index& index,
                               const LabelImportOptions& options) {
  if (!fs::is_regular_file(manifestPath))
    throw ManifestError("no such manifest: " + manifestPath);
  const CsvTable table = readCsvFile(manifestPath);
  if (table.header.empty())
    throw ManifestError(manifestPath + ": empty file, no header");

  LabelImportReport report;
  report.manifestPath = manifestPath;
  report.labelSource = "manifest:" + manifestPath;
  report.matchColumn = options.matchColumn;
  if (report.matchColumn.empty())
    report.matchColumn = table.column("dicom_file") ? "dicom_file" : "file";
  const std::optional<std::size_t> matchColumn = table.column(report.matchColumn);
  if (!matchColumn) {
    throw ManifestError(
        manifestPath + ": missing column " +
        (options.matchColumn.empty() ? std::string("dicom_file or file") : report.matchColumn));
  }
  if (!hasLabelColumns(table))
    throw ManifestError(manifestPath + ": no label columns (label_<name> or labels)");

  report.rows = table.records.size() + table.problems.size();
  for (const CsvProblem& p : table.problems)
    report.failures.push_back({p.row, p.line, "", p.message});
  const ManifestLabels labels = extractLabels(table);
  report.warnings = labels.warnings;
  const auto imageColumn = table.column("image_id");

  // Decoded rows by file name, then compared component by component from the end.
  const std::vector<storage::InstanceRecord> rows = index.decodedInstances();
  std::map<std::string, std::vector<const storage::InstanceRecord*>> byName;
  for (const storage::InstanceRecord& row : rows)
    byName[fs::path(row.source).filename().string()].push_back(&row);

  std::vector<storage::LabelRecord> wanted;
  for (std::size_t i = 0; i < table.records.size(); ++i) {
    const CsvRecord& r = table.records[i];
    const std::string value = cell(r, matchColumn);
    const std::string imageId = cell(r, imageColumn);
    if (value.empty()) {
      report.failures.push_back({r.row, r.line, imageId, "empty " + report.matchColumn});
      continue;
    }
    const fs::path suffix = fs::path(value).lexically_normal();
    std::vector<const storage::InstanceRecord*> matches;
    if (const auto candidates = byName.find(suffix.filename().string()); candidates != byName.end()) {
      for (const storage::InstanceRecord* row : candidates->second) {
        if (endsWithComponents(fs::path(row->source).lexically_normal(), suffix))
          matches.push_back(row);
      }
    }
    if (matches.empty()) {
      report.failures.push_back(
          {r.row, r.line, imageId, "no decoded image in the index comes from " + value});
      continue;
    }
    ++report.matchedRows;
    const std::vector<ManifestLabel>& rowLabels = labels.perRecord[i];
    if (rowLabels.empty()) {
      ++report.unlabelledRows;
      continue;
    }
    ++report.labelledRows;
    for (const storage::InstanceRecord* row : matches) {
      ++report.instancesLabelled;
      count(report.labels, rowLabels);
      const auto records = labelRecords(row->resourceId, rowLabels, report.labelSource);
      wanted.insert(wanted.end(), records.begin(), records.end());
    }
  }
  std::sort(report.failures.begin(), report.failures.end(),
            [](const RowFailure& a, const RowFailure& b) { return a.row < b.row; });
  report.labelsWritten = storeLabels(index, wanted);
  return report;
}

}  // namespace comcl::imaging
