// comcl's per-study results as a DICOM Structured Report (DCMTK dcmsr), stored back into the same study.
//
// SOP class: Comprehensive SR. Enhanced SR would hold the value types used here (CONTAINER, TEXT, CODE,
// NUM, IMAGE, COMPOSITE) as well, but Comprehensive SR is the general-purpose SR class that archives and
// viewers support most widely, and it leaves room for later additions (by-reference relationships) without
// changing the SOP class of reports already stored.
//
// The object: Modality SR, a new series (SeriesInstanceUID and SOPInstanceUID generated under the UUID
// root "2.25.", so no organisation root is needed), SeriesNumber kSrSeriesNumber, SeriesDescription
// kSrSeriesDescription, Manufacturer "comcl", SoftwareVersions, InstanceNumber 1, ContentDate/Time now,
// CompletionFlag PARTIAL and VerificationFlag UNVERIFIED (machine-generated, nobody signed it),
// SpecificCharacterSet ISO_IR 192 when any string is not ASCII (input strings are UTF-8; ASCII-only
// reports keep the default repertoire, which DCMTK 3.6.7's SR VR checker handles without a warning).
// Patient and study attributes are copied from SrStudyReport::studyTags (absent ones stay empty: DCMTK does
// not invent a StudyDate). CurrentRequestedProcedureEvidenceSequence lists every referenced instance,
// grouped by series.
//
// Content tree (codes without a standard equivalent use the private scheme "99COMCL", declared in the
// CodingSchemeIdentificationSequence; DCM codes are taken from DCMTK's generated code list):
//   CONTAINER (99COMCL REPORT "comcl quality and diagnosis report")            document title
//     CONTAINS CONTAINER (99COMCL MODEL "Diagnosis model")
//       CONTAINS TEXT (DCM 111001 "Algorithm Name") = modelDescription          model active
//       CONTAINS TEXT (DCM 111003 "Algorithm Version") = "3"
//       or CONTAINS TEXT (99COMCL MODELSTATUS "Diagnosis model status") = "no diagnosis model is active"
//     CONTAINS CODE (99COMCL STUDYQUALITY "Study quality flag") = GOOD | USABLE | REJECT | NOTASSESSED
//     CONTAINS TEXT (99COMCL QREASON "Quality reason") = "blurred"              one per study reason
//     CONTAINS NUM (DCM 122157 "Probability") = 0.83 {probability} (UCUM)      one per study score
//       HAS CONCEPT MOD TEXT (DCM 121071 "Finding") = "cardiomegaly"
//     CONTAINS CONTAINER (99COMCL IMAGERESULT "Image result")                  one per image
//       CONTAINS IMAGE (DCM 121324 "Source Image") = SOP class + instance      (COMPOSITE, concept
//                                                      99COMCL SOURCEOBJECT, for non-image SOP classes)
//       CONTAINS CODE (99COMCL DECODESTATE "Decode state") = DECODED | SKIPPED | UNSUPPORTED | FAILED
//       CONTAINS CODE (99COMCL IMAGEQUALITY "Image quality flag") = GOOD | USABLE | REJECT | NOTASSESSED
//       CONTAINS TEXT (99COMCL QREASON "Quality reason") or (99COMCL DREASON "Decode reason") = reason
//       CONTAINS NUM (DCM 122157 "Probability") ... as for the study scores
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace comcl::imaging {

inline constexpr const char* kSrManufacturer = "comcl";
inline constexpr const char* kSrSeriesDescription = "comcl quality and diagnosis report";
inline constexpr int kSrSeriesNumber = 9901;
inline constexpr const char* kSrCodingScheme = "99COMCL";  // private coding scheme designator
inline constexpr const char* kSrNoModelText = "no diagnosis model is active";

// One instance of the study as comcl saw it. The three UIDs are required (the instance is referenced).
struct SrImageResult {
  std::string sopClassUid;
  std::string sopInstanceUid;
  std::string seriesInstanceUid;
  std::string decodeState;  // "decoded", "skipped", "unsupported" or "failed" (toString(DecodeOutcome))
  std::string qualityFlag;  // "good", "usable", "reject"; empty when not assessed (not decoded)
  // Quality reasons ("blurred", "noisy") when decoded, else the decode reason.
  std::vector<std::string> reasons;
  // Finding -> probability in [0, 1]; empty without a model.
  std::vector<std::pair<std::string, double>> scores;
};

struct SrStudyReport {
  // Patient and study attributes to copy, by DICOM keyword, so that the SR lands in the same study:
  // PatientName, PatientID, IssuerOfPatientID, PatientBirthDate, PatientSex, StudyInstanceUID, StudyDate,
  // StudyTime, AccessionNumber, ReferringPhysicianName, StudyID, StudyDescription. Values are copied as
  // given (UTF-8); empty values count as absent; StudyInstanceUID is required; other keywords are refused.
  std::vector<std::pair<std::string, std::string>> studyTags;
  std::string studyQualityFlag;  // worst flag of the decoded images; empty if none was assessed
  std::vector<std::string> studyReasons;
  std::optional<int> modelVersion;  // no value: kSrNoModelText is written instead of the model
  std::string modelDescription;     // e.g. "moco-v2+medaug resnet18"
  std::vector<std::pair<std::string, double>> studyScores;  // finding -> probability in [0, 1]
  std::vector<SrImageResult> images;
  std::string softwareVersion;  // comcl's version, written to SoftwareVersions
};

// Writes the report as a DICOM Part-10 file (explicit VR little endian) with fresh series and instance
// UIDs. Throws std::invalid_argument for unusable input (missing or invalid StudyInstanceUID, an image
// without its UIDs, an unknown keyword, flag or decode state, a probability outside [0, 1], text that is
// not UTF-8) and std::runtime_error when DCMTK fails (with DCMTK's text).
std::vector<std::uint8_t> writeStructuredReport(const SrStudyReport& report);

// True only for SRs written by writeStructuredReport: Modality SR, Manufacturer kSrManufacturer and
// SeriesDescription kSrSeriesDescription. Parses at most the first 64 KiB (cheap on large images); the
// header alone decides, so a file cut after those attributes still counts. Never throws: garbage, empty
// input or a file cut before those attributes gives false.
bool isComclReport(const void* data, std::size_t size);

}  // namespace comcl::imaging
