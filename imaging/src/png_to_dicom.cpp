#include "comcl/imaging/png_to_dicom.h"

#include <dcmtk/config/osconfig.h>  // must come first among DCMTK headers
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/ofstd/ofuuid.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "comcl/imaging/image.h"
#include "comcl/imaging/ingest.h"
#include "manifest_fields.h"

namespace comcl::imaging {

namespace fs = std::filesystem;
using detail::cell;
using detail::emptyRequiredCells;
using detail::joined;
using detail::lower;
using detail::readRowPng;
using detail::rowName;
using detail::upper;

namespace {

// --- dates

// Studies whose manifest has no DICOM date get this date plus their day offset: fictional, but valid, and a
// patient's studies keep their order and spacing.
constexpr int kBaseYear = 2020;
constexpr int kBaseMonth = 1;
constexpr int kBaseDay = 1;
// Day offsets, in the order they are looked for: covid_chestxray_subset's days since symptom onset, MHH's
// days since admission, NIH's follow-up number (not days, but ordered like them).
constexpr std::array<const char*, 3> kOffsetColumns = {"offset_days", "days_since_admission", "follow_up"};
// Offsets beyond a century are typing errors, not dates.
constexpr long kMaxOffsetDays = 36500;

// Days since 1970-01-01 of a proleptic Gregorian date, and back: the era-based algorithms of H. Hinnant's
// "chrono-Compatible Low-Level Date Algorithms" (exact for any day count we can meet).
long daysFromCivil(int year, int month, int day) {
  const long y = year - (month <= 2 ? 1 : 0);
  const long era = (y >= 0 ? y : y - 399) / 400;
  const long yearOfEra = y - era * 400;
  const long dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
  const long dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear;
  return era * 146097 + dayOfEra - 719468;
}

std::string dicomDateOf(long days) {
  days += 719468;
  const long era = (days >= 0 ? days : days - 146096) / 146097;
  const long dayOfEra = days - era * 146097;
  const long yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146096) / 365;
  const long dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100);
  const long mp = (5 * dayOfYear + 2) / 153;
  const long day = dayOfYear - (153 * mp + 2) / 5 + 1;
  const long month = mp < 10 ? mp + 3 : mp - 9;
  const long year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0);
  char text[64];  // room for any long, though a date from kMaxOffsetDays needs 9
  std::snprintf(text, sizeof text, "%04ld%02ld%02ld", year, month, day);
  return text;
}

// A whole number of days ("3", "-5", "2.0"); nullopt for anything else.
std::optional<long> parseDays(const std::string& text) {
  if (text.empty())
    return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (*end != '\0' || !std::isfinite(value) || value != std::floor(value) ||
      std::fabs(value) > static_cast<double>(kMaxOffsetDays))
    return std::nullopt;
  return static_cast<long>(value);
}

// --- identifiers

// RFC 4122 version 5 (name-based, SHA-1) UUID of `parts` joined by U+001F, written under the UUID root
// "2.25." as comcl's other UIDs are: no organisation root needed, at most 44 characters.
std::string nameBasedUid(const std::vector<std::string>& parts) {
  // comcl's namespace for UIDs of converted PNG data sets (a fixed random UUID).
  static const std::string kNamespace("\x6b\x0e\x3a\x51\x92\xc4\x4f\x2d\xa8\x17\x5d\x3e\xc1\x09\x77\x4b", 16);
  std::string name = kNamespace;
  for (std::size_t i = 0; i < parts.size(); ++i)
    name += (i > 0 ? "\x1f" : "") + parts[i];
  const std::string hex = sha1Hex(name.data(), name.size());
  OFUUID::BinaryRepresentation bytes{};
  for (std::size_t i = 0; i < sizeof(bytes.value); ++i)
    bytes.value[i] = static_cast<Uint8>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  bytes.value[6] = static_cast<Uint8>((bytes.value[6] & 0x0F) | 0x50);  // version 5: name-based, SHA-1
  bytes.value[8] = static_cast<Uint8>((bytes.value[8] & 0x3F) | 0x80);  // RFC 4122 variant
  OFString uid;
  OFUUID(bytes).toString(uid, OFUUID::ER_RepresentationOID);
  return uid.c_str();
}

// StudyID and AccessionNumber are SH: at most 16 characters. A longer study_id keeps its first 7 characters,
// then '-' and the first 8 hex digits of its SHA-1, so that two long ids with the same start stay apart.
constexpr std::size_t kShortStringMax = 16;
std::string shortIdentifier(const std::string& id) {
  if (id.size() <= kShortStringMax)
    return id;
  return id.substr(0, 7) + "-" + sha1Hex(id.data(), id.size()).substr(0, 8);
}

// Letters, digits, '.', '-' and '_' are kept in file names; anything else becomes '_'.
std::string safeFileName(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) != 0 || c == '.' || c == '-' || c == '_'))
      c = '_';
  }
  if (out.empty() || out == "." || out == "..")
    out = "_" + out;
  return out;
}

// --- manifest values to DICOM values

// ViewPosition (PS3.3 C.8.11.5, defined terms) of the manifest's view: "AP Supine" is an AP projection,
// "L" and "Lateral" are the left lateral LL. Empty, "?" and anything not understood give none.
std::optional<std::string> viewPositionOf(const std::string& view) {
  const std::string v = upper(view);
  if (v == "L" || v == "LAT" || v == "LATERAL")
    return "LL";
  if (v.rfind("AP", 0) == 0 && (v.size() == 2 || v[2] == ' '))  // "AP", "AP SUPINE", "AP ERECT"
    return "AP";
  static const std::array<const char*, 8> kDefined = {"AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO"};
  if (std::find(kDefined.begin(), kDefined.end(), v) != kDefined.end())
    return v;
  return std::nullopt;
}

// CR or DX when the manifest says so; "X-ray" (plain radiography) and anything else: DX.
std::string modalityOf(const std::string& modality) {
  const std::string m = upper(modality);
  return m == "CR" ? "CR" : "DX";
}

std::string sexOf(const std::string& sex) {
  const std::string s = upper(sex);
  if (s == "M" || s == "MALE")
    return "M";
  if (s == "F" || s == "FEMALE")
    return "F";
  return "";
}

// PatientAge (AS) "054Y" from whole years 0..999; nullopt otherwise.
std::optional<std::string> ageOf(const std::string& age) {
  const std::optional<long> years = parseDays(age);
  if (!years || *years < 0 || *years > 999)
    return std::nullopt;
  char text[8];
  std::snprintf(text, sizeof text, "%03ldY", *years);
  return std::string(text);
}

// --- DICOM writing

void check(const OFCondition& status, const std::string& what) {
  if (status.bad())
    throw std::runtime_error("to-dicom: " + what + ": " + status.text());
}

void put(DcmDataset& ds, const DcmTagKey& key, const std::string& value) {
  check(ds.putAndInsertString(key, value.c_str()), "cannot set " + std::string(DcmTag(key).getTagName()));
}

void putUs(DcmDataset& ds, const DcmTagKey& key, int value) {
  check(ds.putAndInsertUint16(key, static_cast<Uint16>(value)),
        "cannot set " + std::string(DcmTag(key).getTagName()));
}

// What one file says besides its pixels.
struct Header {
  std::string patientId, patientName, sex;
  std::optional<std::string> age;
  std::string studyUid, seriesUid, sopUid;
  std::string studyId, studyDate, modality;
  std::optional<std::string> view;
  std::string seriesDescription, studyDescription;
  int seriesNumber = 1;
  std::string derivation, comments;
};

// Writes `path` through a temporary file, so that an interrupted run never leaves half a DICOM file under a
// name storescu would send.
void writeDicom(const fs::path& path, const Header& h, const std::vector<std::uint8_t>& grey, int width,
                int height) {
  DcmFileFormat file;
  DcmDataset& ds = *file.getDataset();
  put(ds, DCM_SpecificCharacterSet, "ISO_IR 192");  // manifests are UTF-8
  put(ds, DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  put(ds, DCM_SOPInstanceUID, h.sopUid);
  put(ds, DCM_StudyInstanceUID, h.studyUid);
  put(ds, DCM_SeriesInstanceUID, h.seriesUid);
  put(ds, DCM_ImageType, "DERIVED\\SECONDARY");
  put(ds, DCM_ConversionType, "WSD");
  put(ds, DCM_Modality, h.modality);
  put(ds, DCM_PatientName, h.patientName);
  put(ds, DCM_PatientID, h.patientId);
  put(ds, DCM_PatientBirthDate, "");
  put(ds, DCM_PatientSex, h.sex);
  if (h.age)
    put(ds, DCM_PatientAge, *h.age);
  put(ds, DCM_StudyDate, h.studyDate);
  put(ds, DCM_StudyTime, "");
  put(ds, DCM_SeriesDate, h.studyDate);
  put(ds, DCM_ContentDate, h.studyDate);
  put(ds, DCM_AccessionNumber, h.studyId);
  put(ds, DCM_StudyID, h.studyId);
  put(ds, DCM_ReferringPhysicianName, "");
  put(ds, DCM_StudyDescription, h.studyDescription);
  put(ds, DCM_SeriesDescription, h.seriesDescription);
  put(ds, DCM_SeriesNumber, std::to_string(h.seriesNumber));
  put(ds, DCM_InstanceNumber, "1");
  put(ds, DCM_BodyPartExamined, "CHEST");
  if (h.view)
    put(ds, DCM_ViewPosition, *h.view);
  put(ds, DCM_PatientOrientation, "");
  put(ds, DCM_DerivationDescription, h.derivation);
  put(ds, DCM_ImageComments, h.comments);

  putUs(ds, DCM_SamplesPerPixel, 1);
  put(ds, DCM_PhotometricInterpretation, "MONOCHROME2");
  putUs(ds, DCM_Rows, height);
  putUs(ds, DCM_Columns, width);
  putUs(ds, DCM_BitsAllocated, 8);
  putUs(ds, DCM_BitsStored, 8);
  putUs(ds, DCM_HighBit, 7);
  putUs(ds, DCM_PixelRepresentation, 0);
  // LINEAR window 128/256 maps stored value x to x / 255 (PS3.3 C.11.2.1.2): the PNG as it was.
  put(ds, DCM_WindowCenter, "128");
  put(ds, DCM_WindowWidth, "256");
  check(ds.putAndInsertUint8Array(DCM_PixelData, grey.data(), static_cast<unsigned long>(grey.size())),
        "cannot set PixelData");

  fs::path partial = path;
  partial += ".part";
  const OFCondition status =
      file.saveFile(partial.string().c_str(), EXS_LittleEndianExplicit, EET_ExplicitLength, EGL_recalcGL,
                    EPD_noChange, 0, 0, EWM_createNewMeta);
  std::error_code ignored;
  if (status.bad()) {
    fs::remove(partial, ignored);
    throw std::runtime_error("to-dicom: cannot write " + path.string() + ": " + status.text());
  }
  std::error_code error;
  fs::rename(partial, path, error);
  if (error) {
    fs::remove(partial, ignored);
    throw std::runtime_error("to-dicom: cannot write " + path.string() + ": " + error.message());
  }
}

void createFolder(const fs::path& dir) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error || !fs::is_directory(dir)) {
    throw std::runtime_error("to-dicom: cannot create folder " + dir.string() +
                             (error ? ": " + error.message() : std::string(": not a folder")));
  }
}

// The study a row belongs to: (patient_id, study_id), the study_id being the image_id when missing.
using StudyKey = std::pair<std::string, std::string>;

}  // namespace

std::string datasetTagOf(const std::string& folder) {
  // weakly_canonical: "." and a trailing slash still give the folder's own name.
  const std::string name = fs::weakly_canonical(fs::absolute(fs::path(folder))).filename().string();
  return lower(name.substr(0, name.find('_')));
}

PngToDicomReport convertToDicom(const std::string& folder, const PngToDicomOptions& options) {
  return convertToDicom(readManifest(folder), options);
}

PngToDicomReport convertToDicom(const Manifest& manifest, const PngToDicomOptions& options) {
  const CsvTable& table = manifest.table;
  const fs::path dir(manifest.folder);
  const std::string folderName = fs::weakly_canonical(fs::absolute(dir)).filename().string();
  PngToDicomReport report;
  report.manifestPath = manifest.path;
  report.datasetTag = options.datasetTag.empty() ? datasetTagOf(manifest.folder) : options.datasetTag;
  report.outputDir = options.outputDir;
  report.rows = table.records.size() + table.problems.size();
  report.considered = options.limit == 0 ? report.rows : std::min(options.limit, report.rows);
  const auto considered = [&](std::size_t row) { return row <= report.considered; };
  for (const CsvProblem& p : table.problems) {
    if (considered(p.row))
      report.failures.push_back({p.row, p.line, "", p.message});
  }

  const detail::ManifestColumns columns(table);
  const auto patientColumn = columns.patient, imageColumn = columns.image, fileColumn = columns.file,
             studyColumn = columns.study, viewColumn = columns.view, modalityColumn = columns.modality,
             dateColumn = columns.date;
  const auto sexColumn = table.column("sex");
  const auto ageColumn = table.column("age");
  const auto licenceColumn = table.column("license");
  std::optional<std::size_t> offsetColumn;
  for (const char* name : kOffsetColumns) {
    if ((offsetColumn = table.column(name)))
      break;
  }
  const std::string baseDate = dicomDateOf(daysFromCivil(kBaseYear, kBaseMonth, kBaseDay));
  std::vector<std::string> dateSources;
  if (dateColumn)
    dateSources.push_back("column " + table.header[*dateColumn]);
  if (offsetColumn)
    dateSources.push_back(baseDate + " + column " + table.header[*offsetColumn]);
  dateSources.push_back(baseDate);
  report.dateSource = joined(dateSources, ", else ");
  if (!studyColumn)
    report.warnings.push_back(manifest.path + ": no study_id column: each image is its own study");

  const ManifestLabels labels = extractLabels(table);
  for (const std::string& w : labels.warnings)
    report.warnings.push_back(w);

  // Over every record, so that a study's date and its images' series numbers do not depend on --limit: a
  // study's date is the earliest date of its rows (the base date when none has one).
  const auto studyKeyOf = [&](const CsvRecord& r) {
    const std::string study = cell(r, studyColumn);
    return StudyKey{cell(r, patientColumn), study.empty() ? cell(r, imageColumn) : study};
  };
  struct StudyDate {
    long days = 0;
    std::string source;  // for ImageComments
  };
  std::map<StudyKey, StudyDate> studyDates;
  std::vector<int> seriesNumbers(table.records.size(), 1);
  {
    std::map<StudyKey, int> imagesInStudy;
    for (std::size_t i = 0; i < table.records.size(); ++i) {
      const CsvRecord& r = table.records[i];
      const StudyKey key = studyKeyOf(r);
      seriesNumbers[i] = ++imagesInStudy[key];
      std::optional<StudyDate> date;
      if (const std::string text = cell(r, dateColumn); detail::isYyyymmdd(text)) {
        date = StudyDate{daysFromCivil(std::stoi(text.substr(0, 4)), std::stoi(text.substr(4, 2)),
                                       std::stoi(text.substr(6, 2))),
                         "from column " + table.header[*dateColumn]};
      } else if (const std::string offset = cell(r, offsetColumn); !offset.empty() && offset != "?") {
        if (const std::optional<long> parsed = parseDays(offset)) {
          date = StudyDate{daysFromCivil(kBaseYear, kBaseMonth, kBaseDay) + *parsed,
                           "synthetic: " + baseDate + " + " + table.header[*offsetColumn] + " " + offset};
        } else {
          report.warnings.push_back(rowName(r.row) + " (line " + std::to_string(r.line) +
                                    "): " + table.header[*offsetColumn] + " '" + offset +
                                    "' is not a whole number of days; ignored");
        }
      }
      if (date) {
        auto [it, added] = studyDates.emplace(key, *date);
        if (!added && date->days < it->second.days)
          it->second = *date;
      }
    }
  }

  if (!options.outputDir.empty())
    createFolder(options.outputDir);
  std::map<std::string, std::size_t> rowOfImage;  // image_id -> row, to name duplicates
  std::map<std::string, std::size_t> rowOfPath;   // output file -> row
  for (std::size_t i = 0; i < table.records.size(); ++i) {
    const CsvRecord& r = table.records[i];
    if (!considered(r.row))
      continue;
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
    if (const auto [it, added] = rowOfImage.emplace(imageId, r.row); !added) {
      fail("duplicate image_id (first in " + rowName(it->second) + ")");
      continue;
    }

    Header h;
    h.patientId = report.datasetTag + "-" + patient;
    const fs::path output =
        fs::path(options.outputDir) / safeFileName(h.patientId) / (safeFileName(imageId) + ".dcm");
    if (const auto [it, added] = rowOfPath.emplace(output.string(), r.row); !added) {
      fail("same output file " + output.string() + " as " + rowName(it->second));
      continue;
    }

    const fs::path png = (dir / file).lexically_normal();
    std::string pngError;
    std::optional<Image> read = readRowPng(png, pngError);
    if (!read) {
      fail(pngError);
      continue;
    }
    Image image = std::move(*read);
    if (image.width > 0xFFFF || image.height > 0xFFFF) {
      fail("image " + std::to_string(image.width) + "x" + std::to_string(image.height) +
           " is larger than DICOM's 65535 rows or columns");
      continue;
    }
    std::vector<std::string> changes;
    if (image.channels == 3) {
      image = toGrey(image);
      changes.emplace_back("colour converted to grey (BT.601 luminance)");
    }
    if (detail::pngBitDepth(png.string()) == 16)
      changes.emplace_back("16-bit samples rounded to 8 bits");
    for (const std::string& change : changes)
      report.warnings.push_back(rowName(r.row) + " (" + png.string() + "): " + change);

    const StudyKey studyKey = studyKeyOf(r);
    const auto date = studyDates.find(studyKey);
    const bool dated = date != studyDates.end();
    h.patientName = upper(report.datasetTag) + "^" + patient;
    h.sex = sexOf(cell(r, sexColumn));
    h.age = ageOf(cell(r, ageColumn));
    h.studyUid = nameBasedUid({"study", report.datasetTag, patient, studyKey.second});
    h.seriesUid = nameBasedUid({"series", report.datasetTag, patient, studyKey.second, imageId});
    h.sopUid = nameBasedUid({"image", report.datasetTag, patient, studyKey.second, imageId});
    h.studyId = shortIdentifier(studyKey.second);
    h.studyDate = dated ? dicomDateOf(date->second.days) : baseDate;
    h.modality = modalityOf(cell(r, modalityColumn));
    const std::string view = cell(r, viewColumn);
    h.view = viewPositionOf(view);
    h.seriesDescription = view.empty() || view == "?" ? "CHEST" : "CHEST " + view;
    h.studyDescription = "Chest radiograph (" + folderName + ")";
    h.seriesNumber = seriesNumbers[i];
    h.derivation = "PNG " + folderName + "/" + file + " stored as DICOM by comcl to-dicom" +
                   (changes.empty() ? std::string(", pixels unchanged") : "; " + joined(changes, "; "));
    h.comments = "Source: " + folderName + "/" + file + " (manifest.csv " + rowName(r.row) + ", image_id " +
                 imageId + ")";
    if (const std::string licence = cell(r, licenceColumn); !licence.empty())
      h.comments += "; licence: " + licence;
    h.comments += "; StudyDate " + (dated ? date->second.source : "synthetic: " + baseDate + ", no date");

    createFolder(output.parent_path());
    writeDicom(output, h, quantise(image, 8), image.width, image.height);

    DicomFromPng written;
    written.row = r.row;
    written.imageId = imageId;
    written.path = output.string();
    written.patientId = h.patientId;
    written.studyKey = studyKey.second;
    written.studyInstanceUid = h.studyUid;
    written.seriesInstanceUid = h.seriesUid;
    written.sopInstanceUid = h.sopUid;
    written.studyDate = h.studyDate;
    written.viewPosition = h.view;
    written.labels = labels.perRecord[i];
    report.written.push_back(std::move(written));
  }
  std::sort(report.failures.begin(), report.failures.end(),
            [](const RowFailure& a, const RowFailure& b) { return a.row < b.row; });
  return report;
}

std::vector<StudyLabelRow> studyLabelRows(const PngToDicomReport& report, const std::set<std::string>& only) {
  std::vector<StudyLabelRow> rows;
  std::map<std::string, std::size_t> rowOfStudy;
  for (const DicomFromPng& image : report.written) {
    for (const ManifestLabel& label : image.labels) {
      if (label.value != 0.0 && label.value != 1.0)  // uncertain
        continue;
      if (!only.empty() && only.count(label.finding) == 0)
        continue;
      const auto [it, added] = rowOfStudy.emplace(image.studyInstanceUid, rows.size());
      if (added)
        rows.push_back({image.studyInstanceUid, {}});
      int& value = rows[it->second].labels.emplace(label.finding, 0).first->second;
      value = std::max(value, static_cast<int>(label.value));
    }
  }
  return rows;
}

}  // namespace comcl::imaging
