// Reading manifest rows, shared by the manifest import and the PNG-to-DICOM conversion. Internal to
// imaging/; defined in manifest_import.cpp.
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "comcl/imaging/image.h"
#include "comcl/imaging/manifest_import.h"

namespace comcl::imaging::detail {

// Without surrounding blanks (space, tab, CR, LF).
std::string trim(std::string_view s);
std::string upper(std::string s);  // ASCII
std::string lower(std::string s);  // ASCII
std::string joined(const std::vector<std::string>& parts, const char* separator);
// Eight digits with a month 01-12 and a day 01-31.
bool isYyyymmdd(std::string_view s);
// The trimmed cell of `record` in column `column`, "" when the table has no such column.
std::string cell(const CsvRecord& record, std::optional<std::size_t> column);
// The first column named like a date whose non-empty cells are all YYYYMMDD (at least one).
std::optional<std::size_t> studyDateColumn(const CsvTable& table);
// A PNG's bit depth from its header; 0 when the header cannot be read.
int pngBitDepth(const std::string& path);
// The columns both readers use; each empty when the table has none by that name.
struct ManifestColumns {
  explicit ManifestColumns(const CsvTable& table);
  std::optional<std::size_t> patient, image, file, study, view, modality, date;
};
// "row N"
std::string rowName(std::size_t row);
// "empty patient_id, file" naming the empty ones of a row's required cells; "" when none is empty.
std::string emptyRequiredCells(const std::string& patient, const std::string& imageId,
                               const std::string& file);
// A row's PNG (readPng), or empty with `error` saying why ("missing file <path>", not a PNG, truncated, an
// unsupported layout): the row is bad, the others go on.
std::optional<Image> readRowPng(const std::filesystem::path& path, std::string& error);

}  // namespace comcl::imaging::detail
