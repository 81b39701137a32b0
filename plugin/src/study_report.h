// A study's results from its images' index rows: the JSON report (the attachment), the headline values
// (study metadata), the DICOM SR content, and a fingerprint that says whether anything changed since the
// last annotation. Pure functions, no Orthanc: unit-tested on their own.
//
// Aggregation rules (docs/annotation.md):
// - study quality flag: the worst flag among its decoded images (one rejected film makes the study worth a
//   look); reasons: the union of their reasons, in the fixed vocabulary order;
// - study score per finding: the highest probability among its decoded images that are not rejected, or
//   among all decoded images when every one is rejected (said in the report);
// - images that are not decoded (SR, PDF, undecodable) are listed with their reason and never fail a study.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "comcl/imaging/structured_report.h"
#include "comcl/storage/index.h"
#include "plugin_config.h"
#include "scoring.h"

namespace comcl::plugin {

struct ImageResults {
  storage::InstanceRecord row;
  std::optional<storage::QualityRecord> quality;
  std::vector<storage::PredictionRecord> predictions;  // of the active model only
};

struct StudyInput {
  std::string studyResourceId;
  // Patient- and study-level tags from Orthanc (keyword -> value), copied into the report and the SR.
  std::vector<std::pair<std::string, std::string>> studyTags;
  std::vector<ImageResults> images;
  std::optional<ActiveModel> model;
  bool structuredReport = false;  // part of the fingerprint: switching it on re-annotates
};

struct StudyResults {
  std::optional<std::string> qualityFlag;  // nullopt: no decoded image
  std::vector<std::string> qualityReasons;
  std::vector<std::pair<std::string, double>> scores;  // finding -> study score, in the model's order
  bool scoresFromRejectedImages = false;
  nlohmann::json report;  // the attachment
  std::string fingerprint;
};

// The quality metrics of one image as JSON (the report and GET /comcl/instances/{id} show the same names).
nlohmann::json qualityMetricsJson(const storage::QualityRecord& quality);
// A JSON string, or null for an absent value.
nlohmann::json optionalText(const std::optional<std::string>& text);

StudyResults summariseStudy(const StudyInput& input, const std::string& softwareVersion);

// The headline values as short metadata strings (each well under Orthanc's ~1 KB guideline).
std::vector<std::pair<std::string, std::string>> headlineMetadata(const StudyResults& results,
                                                                  const std::optional<ActiveModel>& model);

imaging::SrStudyReport structuredReportOf(const StudyInput& input, const StudyResults& results,
                                          const std::string& softwareVersion);

}  // namespace comcl::plugin
