#include "study_report.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "comcl/imaging/ingest.h"
#include "comcl/imaging/quality_flags.h"

namespace comcl::plugin {

namespace {

int severity(const std::string& flag) {
  if (flag == "reject")
    return 2;
  if (flag == "usable")
    return 1;
  return 0;
}

std::vector<std::string> splitReasons(const std::string& text) {
  std::vector<std::string> reasons;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find(';', start);
    if (end == std::string::npos)
      end = text.size();
    std::string reason = text.substr(start, end - start);
    reason.erase(0, reason.find_first_not_of(' '));
    reason.erase(reason.find_last_not_of(' ') + 1);
    if (!reason.empty())
      reasons.push_back(reason);
    start = end + 1;
  }
  return reasons;
}

// Reasons in the vocabulary's order, each once; unknown ones (from a newer version) at the end.
std::vector<std::string> orderedReasons(const std::vector<std::string>& reasons) {
  std::vector<std::string> ordered;
  for (const std::string& known : imaging::qualityReasons()) {
    if (std::find(reasons.begin(), reasons.end(), known) != reasons.end())
      ordered.push_back(known);
  }
  for (const std::string& reason : reasons) {
    if (std::find(ordered.begin(), ordered.end(), reason) == ordered.end())
      ordered.push_back(reason);
  }
  return ordered;
}

nlohmann::json imageJson(const ImageResults& image) {
  const storage::InstanceRecord& r = image.row;
  nlohmann::json json = {{"OrthancId", r.resourceId},
                         {"SOPInstanceUID", r.sopInstanceUid},
                         {"SeriesInstanceUID", r.seriesInstanceUid},
                         {"SOPClassUID", r.sopClassUid},
                         {"Modality", optionalText(r.modality)},
                         {"ViewPosition", optionalText(r.viewPosition)},
                         {"Laterality", optionalText(r.laterality)},
                         {"Rows", r.rows},
                         {"Columns", r.cols},
                         {"DecodeState", std::string(storage::toString(r.decodeState))},
                         {"DecodeReason", r.decodeReason}};
  if (image.quality) {
    const storage::QualityRecord& q = *image.quality;
    json["Quality"] = {{"Flag", optionalText(q.flag)},
                       {"Reasons", splitReasons(q.reasons)},
                       {"Metrics", qualityMetricsJson(q)}};
  } else {
    json["Quality"] = nullptr;
  }
  nlohmann::json scores = nlohmann::json::object();
  for (const storage::PredictionRecord& p : image.predictions)
    scores[p.finding] = p.score;
  json["Scores"] = scores;
  return json;
}

std::string formatScore(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f", value);
  return text;
}

}  // namespace

nlohmann::json optionalText(const std::optional<std::string>& text) {
  return text ? nlohmann::json(*text) : nlohmann::json(nullptr);
}

nlohmann::json qualityMetricsJson(const storage::QualityRecord& q) {
  return {{"Sharpness", q.sharpness},         {"Noise", q.noise},
          {"Contrast", q.contrast},           {"DynamicRange", q.dynamicRange},
          {"MeanIntensity", q.meanIntensity}, {"ClipLow", q.clipLow},
          {"ClipHigh", q.clipHigh},           {"BodyClipLow", q.bodyClipLow},
          {"BodyClipHigh", q.bodyClipHigh},   {"BodyMean", q.bodyMean}};
}

StudyResults summariseStudy(const StudyInput& input, const std::string& softwareVersion) {
  StudyResults results;
  std::map<std::string, int> flagCounts = {{"good", 0}, {"usable", 0}, {"reject", 0}};
  std::vector<std::string> reasons;
  int worst = -1;
  bool anyUsableForScores = false;
  for (const ImageResults& image : input.images) {
    if (image.row.decodeState != storage::DecodeState::Decoded || !image.quality || !image.quality->flag)
      continue;
    const std::string& flag = *image.quality->flag;
    flagCounts[flag] += 1;
    if (severity(flag) > worst) {
      worst = severity(flag);
      results.qualityFlag = flag;
    }
    for (const std::string& reason : splitReasons(image.quality->reasons))
      reasons.push_back(reason);
    if (flag != "reject" && !image.predictions.empty())
      anyUsableForScores = true;
  }
  results.qualityReasons = orderedReasons(reasons);

  if (input.model) {
    results.scoresFromRejectedImages = !anyUsableForScores;
    for (const std::string& finding : input.model->findings) {
      std::optional<double> best;
      for (const ImageResults& image : input.images) {
        const bool rejected = image.quality && image.quality->flag && *image.quality->flag == "reject";
        if (anyUsableForScores && rejected)
          continue;
        for (const storage::PredictionRecord& p : image.predictions) {
          if (p.finding == finding && (!best || p.score > *best))
            best = p.score;
        }
      }
      if (best)
        results.scores.emplace_back(finding, *best);
    }
    if (results.scores.empty())
      results.scoresFromRejectedImages = false;
  }

  // Everything the results depend on, in a canonical order.
  std::vector<std::string> lines;
  for (const ImageResults& image : input.images) {
    std::string line = image.row.resourceId + "|" + std::string(storage::toString(image.row.decodeState)) +
                       "|" + image.row.decodeReason;
    if (image.quality)
      line += "|" + image.quality->flag.value_or("") + "|" + image.quality->reasons;
    for (const storage::PredictionRecord& p : image.predictions)
      line += "|" + p.finding + "=" + formatScore(p.score);
    lines.push_back(line);
  }
  std::sort(lines.begin(), lines.end());
  std::string canonical =
      "model=" + (input.model ? std::to_string(input.model->version) : std::string("none")) +
      ";sr=" + (input.structuredReport ? "1" : "0") + ";software=" + softwareVersion;
  for (const auto& [key, value] : input.studyTags)
    canonical += "\n" + key + "=" + value;
  for (const std::string& line : lines)
    canonical += "\n" + line;
  results.fingerprint = imaging::sha1Hex(canonical.data(), canonical.size());

  nlohmann::json study = {{"OrthancId", input.studyResourceId}};
  for (const auto& [key, value] : input.studyTags)
    study[key] = value;
  nlohmann::json images = nlohmann::json::array();
  for (const ImageResults& image : input.images)
    images.push_back(imageJson(image));
  nlohmann::json scores = nlohmann::json::object();
  for (const auto& [finding, score] : results.scores)
    scores[finding] = score;

  nlohmann::json& report = results.report;
  report["Format"] = "comcl-study-report";
  report["FormatVersion"] = 1;
  report["Software"] = "comcl " + softwareVersion;
  report["Study"] = study;
  if (input.model) {
    report["Model"] = {{"Version", input.model->version},
                       {"Description", input.model->description},
                       {"Findings", input.model->findings}};
  } else {
    report["Model"] = nullptr;
    report["ModelMessage"] = "no diagnosis model is active: this report gives image quality only";
  }
  report["Quality"] = {{"Flag", optionalText(results.qualityFlag)},
                       {"Reasons", results.qualityReasons},
                       {"Counts", flagCounts}};
  report["Scores"] = scores;
  report["ScoresFromRejectedImages"] = results.scoresFromRejectedImages;
  report["Images"] = images;
  report["Fingerprint"] = results.fingerprint;
  return results;
}

std::vector<std::pair<std::string, std::string>> headlineMetadata(const StudyResults& results,
                                                                  const std::optional<ActiveModel>& model) {
  std::string reasons;
  for (const std::string& reason : results.qualityReasons)
    reasons += (reasons.empty() ? "" : ";") + reason;
  std::vector<std::pair<std::string, double>> sorted = results.scores;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string scores;
  for (const auto& [finding, score] : sorted) {
    const std::string item = finding + "=" + formatScore(score);
    if (scores.size() + item.size() + 1 > 900)  // stay well under Orthanc's ~1 KB metadata guideline
      break;
    scores += (scores.empty() ? "" : ";") + item;
  }
  return {{ResultNames::kQualityFlag, results.qualityFlag.value_or("none")},
          {ResultNames::kQualityReasons, reasons},
          {ResultNames::kModelVersion, model ? std::to_string(model->version) : std::string("none")},
          {ResultNames::kScores, scores}};
}

imaging::SrStudyReport structuredReportOf(const StudyInput& input, const StudyResults& results,
                                          const std::string& softwareVersion) {
  imaging::SrStudyReport sr;
  // Only the patient and study attributes the SR copies (Orthanc's study also has e.g. InstitutionName).
  static const std::set<std::string> copied = {"PatientName",       "PatientID",
                                               "IssuerOfPatientID", "PatientBirthDate",
                                               "PatientSex",        "StudyInstanceUID",
                                               "StudyDate",         "StudyTime",
                                               "AccessionNumber",   "ReferringPhysicianName",
                                               "StudyID",           "StudyDescription"};
  for (const auto& [key, value] : input.studyTags) {
    if (copied.count(key) > 0)
      sr.studyTags.emplace_back(key, value);
  }
  sr.studyQualityFlag = results.qualityFlag.value_or("");
  sr.studyReasons = results.qualityReasons;
  if (input.model) {
    sr.modelVersion = input.model->version;
    sr.modelDescription = input.model->description;
  }
  sr.studyScores = results.scores;
  sr.softwareVersion = softwareVersion;
  for (const ImageResults& image : input.images) {
    imaging::SrImageResult entry;
    entry.sopClassUid = image.row.sopClassUid;
    entry.sopInstanceUid = image.row.sopInstanceUid;
    entry.seriesInstanceUid = image.row.seriesInstanceUid;
    entry.decodeState = std::string(storage::toString(image.row.decodeState));
    if (image.quality && image.quality->flag) {
      entry.qualityFlag = *image.quality->flag;
      entry.reasons = splitReasons(image.quality->reasons);
    } else if (!image.row.decodeReason.empty()) {
      entry.reasons = {image.row.decodeReason};
    }
    for (const storage::PredictionRecord& p : image.predictions)
      entry.scores.emplace_back(p.finding, p.score);
    if (!entry.sopInstanceUid.empty() && !entry.sopClassUid.empty())
      sr.images.push_back(std::move(entry));
  }
  return sr;
}

}  // namespace comcl::plugin
