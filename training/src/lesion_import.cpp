// Lesion boxes from a CSV file into the index (comcl import-boxes; columns in lesions.h).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "comcl/training/lesions.h"
#include "lesion_sources.h"

namespace comcl::training {

namespace {

namespace fs = std::filesystem;

struct Record {
  std::size_t row = 0;
  std::size_t line = 0;
  std::vector<std::string> fields;
};

std::string trimmed(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos)
    return "";
  const auto last = text.find_last_not_of(" \t");
  return std::string(text.substr(first, last - first + 1));
}

// RFC 4180 records: commas, LF or CRLF, double-quoted fields with "" for a quote and line breaks inside;
// a UTF-8 byte order mark is dropped, blank lines are skipped. Fields are trimmed of blanks.
std::vector<Record> parseCsv(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF")
    text.remove_prefix(3);
  std::vector<Record> records;
  Record current;
  std::string field;
  bool quoted = false, fieldStarted = false;
  std::size_t line = 1;
  current.line = 1;
  auto endField = [&] {
    current.fields.push_back(trimmed(field));
    field.clear();
    fieldStarted = false;
  };
  auto endRecord = [&] {
    endField();
    const bool blank = current.fields.size() == 1 && current.fields[0].empty();
    if (!blank) {
      current.row = records.size();  // the header is record 0
      records.push_back(std::move(current));
    }
    current = Record{};
    current.line = line;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (quoted) {
      if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        if (ch == '\n')
          ++line;
        field += ch;
      }
    } else if (ch == '"' && !fieldStarted && trimmed(field).empty()) {
      quoted = true;
      fieldStarted = true;
      field.clear();
    } else if (ch == ',') {
      endField();
    } else if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n')
        ++i;
      ++line;
      endRecord();
    } else {
      field += ch;
    }
  }
  if (!field.empty() || !current.fields.empty() || fieldStarted)
    endRecord();
  return records;
}

std::optional<double> number(const std::string& text) {
  if (text.empty())
    return std::nullopt;
  try {
    std::size_t used = 0;
    const double value = std::stod(text, &used);
    if (used != text.size() || !std::isfinite(value))
      return std::nullopt;
    return value;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// Whether `path` ends with the components of `suffix` ("a/b.dcm" matches "/data/x/a/b.dcm", not
// "/data/xa/b.dcm").
bool endsWithComponents(const fs::path& path, const fs::path& suffix) {
  std::vector<fs::path> p(path.begin(), path.end()), s(suffix.begin(), suffix.end());
  if (s.empty() || s.size() > p.size())
    return false;
  return std::equal(s.rbegin(), s.rend(), p.rbegin());
}

}  // namespace

BoxImportReport importLesionBoxesText(storage::Index& index, const std::string& csvText,
                                      const std::string& name, const BoxImportOptions& options) {
  BoxImportReport report;
  report.path = name;
  report.source = options.source.empty() ? "boxes:" + fs::path(name).filename().string() : options.source;
  const std::vector<Record> records = parseCsv(csvText);
  if (records.empty())
    throw LesionError("box file " + name + " is empty (it needs a header row)");
  const std::vector<std::string>& header = records[0].fields;
  auto column = [&](const std::string& wanted) -> std::optional<std::size_t> {
    for (std::size_t c = 0; c < header.size(); ++c)
      if (header[c] == wanted)
        return c;
    return std::nullopt;
  };
  std::optional<std::size_t> match;
  for (const char* candidate : {"resource_id", "sop_instance_uid", "file"}) {
    if ((match = column(candidate))) {
      report.matchColumn = candidate;
      break;
    }
  }
  std::vector<std::string> missing;
  if (!match)
    missing.emplace_back("resource_id, sop_instance_uid or file");
  std::size_t coordinate[4] = {0, 0, 0, 0};
  const char* const names[4] = {"x0", "y0", "x1", "y1"};
  for (int k = 0; k < 4; ++k) {
    if (const auto c = column(names[k]))
      coordinate[k] = *c;
    else
      missing.emplace_back(names[k]);
  }
  if (!missing.empty()) {
    std::string list;
    for (const std::string& m : missing)
      list += (list.empty() ? "" : "; ") + m;
    throw LesionError("box file " + name + " lacks the column(s) " + list);
  }
  const std::optional<std::size_t> confidenceColumn = column("confidence");
  const std::optional<std::size_t> findingColumn = column("finding");

  // The images a row can name.
  const std::vector<storage::InstanceRecord> instances = index.decodedInstances();
  std::unordered_map<std::string, std::vector<const storage::InstanceRecord*>> byKey;
  for (const storage::InstanceRecord& r : instances) {
    if (report.matchColumn == "resource_id")
      byKey[r.resourceId].push_back(&r);
    else if (report.matchColumn == "sop_instance_uid")
      byKey[r.sopInstanceUid].push_back(&r);
    else
      byKey[fs::path(r.source).filename().string()].push_back(&r);
  }

  std::vector<storage::LesionBoxRecord> good;
  std::set<std::string> images;
  for (std::size_t k = 1; k < records.size(); ++k) {
    const Record& record = records[k];
    ++report.rows;
    auto fail = [&](const std::string& reason) {
      report.failures.push_back({record.row, record.line, reason});
    };
    if (record.fields.size() != header.size()) {
      fail("has " + std::to_string(record.fields.size()) + " fields, the header " +
           std::to_string(header.size()));
      continue;
    }
    const std::string& key = record.fields[*match];
    if (key.empty()) {
      fail("empty " + report.matchColumn);
      continue;
    }
    std::vector<const storage::InstanceRecord*> found;
    if (report.matchColumn == "file") {
      const fs::path suffix = fs::path(key).lexically_normal();
      const auto it = byKey.find(suffix.filename().string());
      if (it != byKey.end()) {
        for (const storage::InstanceRecord* r : it->second)
          if (endsWithComponents(fs::path(r->source).lexically_normal(), suffix))
            found.push_back(r);
      }
    } else if (const auto it = byKey.find(key); it != byKey.end()) {
      found = it->second;
    }
    if (found.empty()) {
      fail("no decoded image in the index has " + report.matchColumn + " '" + key + "'");
      continue;
    }
    if (found.size() > 1) {
      fail(std::to_string(found.size()) + " images in the index have " + report.matchColumn + " '" + key +
           "' (use resource_id)");
      continue;
    }
    double value[4] = {0, 0, 0, 0};
    std::string bad;
    for (int c = 0; c < 4; ++c) {
      const std::string& cell = record.fields[coordinate[c]];
      if (const auto v = number(cell))
        value[c] = *v;
      else
        bad += std::string(bad.empty() ? "" : ", ") + names[c] + " '" + cell + "' is not a number";
    }
    double confidence = 1;
    if (confidenceColumn && !record.fields[*confidenceColumn].empty()) {
      const auto v = number(record.fields[*confidenceColumn]);
      if (!v || *v < 0 || *v > 1)
        bad += std::string(bad.empty() ? "" : ", ") + "confidence '" + record.fields[*confidenceColumn] +
               "' is not a number in 0..1";
      else
        confidence = *v;
    }
    if (!bad.empty()) {
      fail(bad);
      continue;
    }
    const storage::InstanceRecord& image = *found.front();
    const std::string outside =
        detail::boxOutsideImage(value[0], value[1], value[2], value[3], image.cols, image.rows);
    if (!outside.empty()) {
      fail("image " + image.resourceId + ": " + outside);
      continue;
    }
    std::string finding = findingColumn ? record.fields[*findingColumn] : "";
    if (finding.empty())
      finding = options.finding;
    if (finding.empty()) {
      fail("no finding (give a finding column or --finding)");
      continue;
    }
    storage::LesionBoxRecord box;
    box.resourceId = image.resourceId;
    box.finding = finding;
    box.x0 = value[0];
    box.y0 = value[1];
    box.x1 = value[2];
    box.y1 = value[3];
    box.confidence = confidence;
    box.source = report.source;
    good.push_back(std::move(box));
    images.insert(image.resourceId);
    ++report.byFinding[finding];
  }
  index.putLesionBoxes(good);
  report.stored = static_cast<std::int64_t>(good.size());
  report.images = static_cast<std::int64_t>(images.size());
  return report;
}

BoxImportReport importLesionBoxes(storage::Index& index, const std::string& csvPath,
                                  const BoxImportOptions& options) {
  std::ifstream in(csvPath, std::ios::binary);
  if (!in)
    throw LesionError("cannot read the box file " + csvPath);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw LesionError("cannot read the box file " + csvPath);
  return importLesionBoxesText(index, text.str(), csvPath, options);
}

}  // namespace comcl::training
