// PNG data sets described by a manifest.csv (imaging/manifest_import.h) written out as DICOM files, one per
// row, keeping the patient / study / view metadata, so that a PNG-only set can be stored into Orthanc
// (storescu) and indexed by the plugin like any radiograph. Used by `comcl to-dicom`; docs/data.md says what
// becomes what.
//
// Every file is a Secondary Capture Image (ConversionType WSD): the pixels are digitised copies, not what a
// modality acquired. The plugin's decoder indexes any SOP class that carries pixel data (decode.cpp looks at
// the pixel description, not at the class), so the honest class costs nothing. Pixels are 8-bit
// MONOCHROME2, uncompressed (Explicit VR Little Endian), with the window 128/256 that shows them unchanged.
// UIDs are name-based (RFC 4122 version 5 UUIDs under the "2.25." root) of the data set, patient, study and
// image, so converting the same manifest twice gives the same files.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "comcl/imaging/manifest_import.h"

namespace comcl::imaging {

struct PngToDicomOptions {
  std::string outputDir;
  std::size_t limit = 0;   // 0: every data row; else only the first `limit` data rows
  std::string datasetTag;  // prefix of PatientID ("covid-5"); empty: datasetTagOf(folder)
};

// One written file.
struct DicomFromPng {
  std::size_t row = 0;  // manifest data row (1-based)
  std::string imageId;
  std::string path;       // the DICOM file written
  std::string patientId;  // as written: "<tag>-<patient_id>"
  std::string studyKey;   // the manifest's study_id (image_id when the manifest has no study_id)
  std::string studyInstanceUid;
  std::string seriesInstanceUid;
  std::string sopInstanceUid;
  std::string studyDate;                    // YYYYMMDD
  std::optional<std::string> viewPosition;  // PA, AP, LL, ...; none for an empty or unknown view
  std::vector<ManifestLabel> labels;        // the row's labels (extractLabels)
};

struct PngToDicomReport {
  std::string manifestPath;
  std::string datasetTag;
  std::string outputDir;
  std::size_t rows = 0;        // data records in the manifest, good or bad
  std::size_t considered = 0;  // rows looked at (all of them, or the first `limit`)
  std::vector<DicomFromPng> written;
  std::vector<RowFailure> failures;  // rows not written, with the reason; sorted by row
  // Where StudyDate comes from, first that applies: "column <YYYYMMDD column>, else 20200101 + column
  // <offset column>, else 20200101" (a study takes the earliest date of its rows).
  std::string dateSource;
  std::vector<std::string> warnings;  // label cells not understood, conversions (colour, 16-bit), ...
};

// "covid" for covid_chestxray_subset, "nih" for nih_cxr14_subset, "mhh" for mhh_covid_cxr: the folder's
// name up to its first '_' (the whole name when it has none), in lower case.
std::string datasetTagOf(const std::string& folder);

// Writes OUTPUT/<tag>-<patient_id>/<image_id>.dcm for each row (characters other than letters, digits, '.',
// '-' and '_' become '_' in file names) and creates the folders it needs. Rows that cannot be converted
// (empty patient_id/image_id/file, missing or undecodable PNG, image too large for DICOM, duplicate image_id
// or output name, ragged) are reported and skipped. Throws std::runtime_error when the output folder
// cannot be created or a file cannot be written (disk full, no permission): those are not the manifest's
// fault and would fail for every row.
PngToDicomReport convertToDicom(const Manifest& manifest, const PngToDicomOptions& options);
// readManifest (throws ManifestError naming missing columns), then convertToDicom.
PngToDicomReport convertToDicom(const std::string& folder, const PngToDicomOptions& options);

// One row of the body of POST /comcl/labels: a study and its labels.
struct StudyLabelRow {
  std::string studyInstanceUid;
  std::map<std::string, int> labels;  // finding -> 0 or 1
};

// The written images' labels merged per study, in the order studies first appear: a finding is 1 when any
// image of the study is positive, else 0 when any is negative; uncertain (-1) labels are left out. `only`
// (when not empty) keeps just those findings. Studies left without labels give no row.
std::vector<StudyLabelRow> studyLabelRows(const PngToDicomReport& report,
                                          const std::set<std::string>& only = {});

}  // namespace comcl::imaging
