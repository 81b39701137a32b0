#include "study_labels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <utility>

#include "comcl/imaging/manifest_import.h"
#include "plugin_config.h"

namespace comcl::plugin {

LabelSet labelSetFromJson(const nlohmann::json& json) {
  if (!json.is_object())
    throw ConfigError(std::string("Comcl.Labels must be a JSON object such as {\"COVID-19\": \"binary\", "
                                  "\"severity\": 4}, not ") +
                      json.type_name());
  LabelSet labels;
  for (const auto& item : json.items()) {
    const std::string where = "Comcl.Labels." + item.key();
    if (item.key().empty())
      throw ConfigError("Comcl.Labels: a label needs a name");
    const nlohmann::json& value = item.value();
    if (value.is_string() && value.get<std::string>() == "binary") {
      labels[item.key()] = 2;
    } else if (value.is_number_integer() && value.get<long long>() >= 2 && value.get<long long>() <= 100) {
      labels[item.key()] = static_cast<int>(value.get<long long>());
    } else {
      throw ConfigError(where + " must be \"binary\" or a number of grades from 2 to 100, not " +
                        value.dump());
    }
  }
  return labels;
}

StudyLabels::StudyLabels(storage::Index& index, LabelSet labels)
    : index_(index), labels_(std::move(labels)) {}

std::vector<storage::LabelRecord> StudyLabels::checked(const std::string& studyInstanceUid,
                                                       const nlohmann::json& labels,
                                                       const std::string& source,
                                                       std::vector<std::string>& problems) const {
  std::vector<storage::LabelRecord> records;
  if (!labels.is_object()) {
    problems.push_back(std::string("Labels must be a JSON object of label names and values, not ") +
                       labels.type_name());
    return records;
  }
  for (const auto& item : labels.items()) {
    const auto declared = labels_.find(item.key());
    if (declared == labels_.end()) {
      std::string known;
      for (const auto& [name, grades] : labels_)
        known += (known.empty() ? "" : ", ") + name;
      problems.push_back("unknown label '" + item.key() +
                         "' (declared in Comcl.Labels: " + (known.empty() ? "none" : known) + ")");
      continue;
    }
    const nlohmann::json& value = item.value();
    const int grades = declared->second;
    const bool integral = value.is_number() && std::isfinite(value.get<double>()) &&
                          value.get<double>() == std::floor(value.get<double>());
    if (!integral || value.get<double>() < 0 || value.get<double>() > grades - 1) {
      problems.push_back(
          "label '" + item.key() + "' must be " +
          (grades == 2 ? std::string("0 or 1") : "an integer from 0 to " + std::to_string(grades - 1)) +
          ", not " + value.dump());
      continue;
    }
    records.push_back({"study", studyInstanceUid, item.key(), value.get<double>(), source});
  }
  return records;
}

std::vector<storage::LesionBoxRecord> StudyLabels::checkedBoxes(const std::string& studyInstanceUid,
                                                                const nlohmann::json& boxes,
                                                                const std::string& source,
                                                                std::vector<std::string>& problems) const {
  std::vector<storage::LesionBoxRecord> records;
  if (!boxes.is_array()) {
    problems.push_back(std::string("Boxes must be a JSON array of {\"SOPInstanceUID\", \"Finding\", \"Box\": "
                                   "[x0, y0, x1, y1]}, not ") +
                       boxes.type_name());
    return records;
  }
  const std::vector<storage::InstanceRecord> instances = index_.instancesOfStudy(studyInstanceUid);
  for (std::size_t i = 0; i < boxes.size(); ++i) {
    const nlohmann::json& box = boxes[i];
    const std::string where = "box " + std::to_string(i + 1) + ": ";
    if (!box.is_object() || !box.contains("SOPInstanceUID") || !box.at("SOPInstanceUID").is_string() ||
        !box.contains("Finding") || !box.at("Finding").is_string() || !box.contains("Box")) {
      problems.push_back(where + "needs \"SOPInstanceUID\", \"Finding\" and \"Box\": [x0, y0, x1, y1]");
      continue;
    }
    const std::string sop = box.at("SOPInstanceUID").get<std::string>();
    const std::string finding = box.at("Finding").get<std::string>();
    const auto instance = std::find_if(instances.begin(), instances.end(),
                                       [&](const auto& row) { return row.sopInstanceUid == sop; });
    if (instance == instances.end()) {
      problems.push_back(where + "the study has no image with SOPInstanceUID " + sop);
      continue;
    }
    const auto declared = labels_.find(finding);
    if (declared == labels_.end() || declared->second != 2) {
      problems.push_back(where + "finding '" + finding + "' is not declared as binary in Comcl.Labels");
      continue;
    }
    const nlohmann::json& corners = box.at("Box");
    const bool numbers = corners.is_array() && corners.size() == 4 &&
                         std::all_of(corners.begin(), corners.end(), [](const nlohmann::json& v) {
                           return v.is_number() && std::isfinite(v.get<double>());
                         });
    if (!numbers) {
      problems.push_back(where + "Box must be [x0, y0, x1, y1] (numbers), not " + corners.dump());
      continue;
    }
    storage::LesionBoxRecord record;
    record.resourceId = instance->resourceId;
    record.finding = finding;
    record.x0 = corners[0].get<double>();
    record.y0 = corners[1].get<double>();
    record.x1 = corners[2].get<double>();
    record.y1 = corners[3].get<double>();
    record.source = source;
    if (box.contains("Confidence"))
      record.confidence = box.at("Confidence").is_number() ? box.at("Confidence").get<double>() : -1;
    const bool inside = record.x0 >= 0 && record.y0 >= 0 && record.x1 > record.x0 && record.y1 > record.y0 &&
                        record.x1 <= instance->cols && record.y1 <= instance->rows;
    if (!inside || !(record.confidence >= 0 && record.confidence <= 1)) {
      problems.push_back(where + "the box must lie inside the " + std::to_string(instance->cols) + " x " +
                         std::to_string(instance->rows) +
                         " image (original pixels, x0 < x1, y0 < y1) with a Confidence from 0 to 1, not " +
                         box.dump());
      continue;
    }
    records.push_back(std::move(record));
  }
  return records;
}

nlohmann::json StudyLabels::putBoxes(const std::string& studyInstanceUid, const nlohmann::json& boxes,
                                     const std::string& source) {
  std::vector<std::string> problems;
  const std::vector<storage::LesionBoxRecord> records =
      checkedBoxes(studyInstanceUid, boxes, source, problems);
  if (!records.empty())
    index_.putLesionBoxes(records);
  return {{"StudyInstanceUID", studyInstanceUid}, {"Stored", records.size()}, {"Problems", problems}};
}

nlohmann::json StudyLabels::put(const std::string& studyInstanceUid, const nlohmann::json& labels,
                                const std::string& source) {
  std::vector<std::string> problems;
  const std::vector<storage::LabelRecord> records = checked(studyInstanceUid, labels, source, problems);
  if (!records.empty())
    index_.putLabels(records);
  return {{"StudyInstanceUID", studyInstanceUid}, {"Stored", records.size()}, {"Problems", problems}};
}

nlohmann::json StudyLabels::get(const std::string& studyInstanceUid) {
  nlohmann::json labels = nlohmann::json::object();
  for (const storage::LabelRecord& label : index_.labels("study", studyInstanceUid))
    labels[label.finding] = {{"Value", label.value}, {"Source", label.source}};
  std::map<std::int64_t, std::string> sopOfRow;
  for (const storage::InstanceRecord& instance : index_.instancesOfStudy(studyInstanceUid))
    sopOfRow[instance.id] = instance.sopInstanceUid;
  nlohmann::json boxes = nlohmann::json::array();
  for (const auto& [finding, grades] : labels_) {
    if (grades != 2)
      continue;
    for (const storage::LesionBoxRecord& box : index_.lesionBoxes(finding)) {
      const auto sop = sopOfRow.find(box.instanceId);
      if (sop != sopOfRow.end())
        boxes.push_back({{"SOPInstanceUID", sop->second},
                         {"Finding", box.finding},
                         {"Box", {box.x0, box.y0, box.x1, box.y1}},
                         {"Confidence", box.confidence},
                         {"Source", box.source}});
    }
  }
  return {{"StudyInstanceUID", studyInstanceUid}, {"Labels", labels}, {"Boxes", boxes}};
}

std::string StudyLabels::resolveStudy(const nlohmann::json& row, std::string& problem) {
  const auto text = [&row](const char* key) -> std::string {
    const auto it = row.find(key);
    return it != row.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string uid = text("StudyInstanceUID");
  if (!uid.empty()) {
    if (index_.instancesOfStudy(uid).empty())
      problem = "no study with StudyInstanceUID " + uid + " in the archive";
    return uid;
  }
  const std::string accession = text("AccessionNumber");
  if (!accession.empty()) {
    const std::vector<std::string> studies = index_.studyInstanceUidsWithAccession(accession);
    if (studies.size() != 1) {
      problem = studies.empty()
                    ? "no study with AccessionNumber " + accession + " in the archive"
                    : "AccessionNumber " + accession + " names " + std::to_string(studies.size()) +
                          " studies; name it by StudyInstanceUID";
      return "";
    }
    return studies.front();
  }
  const std::string patient = text("PatientID"), date = text("StudyDate");
  if (patient.empty() || date.empty()) {
    problem =
        "a row names its study by StudyInstanceUID, AccessionNumber, or PatientID and StudyDate "
        "(strings)";
    return "";
  }
  std::set<std::string> studies;
  for (const storage::InstanceRecord& instance : index_.instancesOfPatient(patient)) {
    if (instance.studyDate == date && !instance.studyInstanceUid.empty())
      studies.insert(instance.studyInstanceUid);
  }
  if (studies.size() != 1) {
    problem = studies.empty() ? "no study of patient " + patient + " on " + date + " in the archive"
                              : "patient " + patient + " has " + std::to_string(studies.size()) +
                                    " studies on " + date + "; name it by StudyInstanceUID";
    return "";
  }
  return *studies.begin();
}

void StudyLabels::importRow(const nlohmann::json& row, std::size_t number, const std::string& source,
                            std::vector<storage::LabelRecord>& records,
                            std::vector<storage::LesionBoxRecord>& boxes, nlohmann::json& problems) {
  const auto report = [&](const std::string& message) {
    problems.push_back({{"Row", number}, {"Message", message}});
  };
  if (!row.is_object() || (!row.contains("Labels") && !row.contains("Boxes"))) {
    report("a row is a JSON object with the study and \"Labels\" (and/or lesion \"Boxes\")");
    return;
  }
  std::string problem;
  const std::string study = resolveStudy(row, problem);
  if (!problem.empty()) {
    report(problem);
    return;
  }
  std::vector<std::string> rowProblems;
  if (row.contains("Labels")) {
    for (storage::LabelRecord& record : checked(study, row.at("Labels"), source, rowProblems))
      records.push_back(std::move(record));
  }
  if (row.contains("Boxes")) {
    for (storage::LesionBoxRecord& box : checkedBoxes(study, row.at("Boxes"), source, rowProblems))
      boxes.push_back(std::move(box));
  }
  for (const std::string& message : rowProblems)
    report(message);
}

nlohmann::json StudyLabels::importRows(const nlohmann::json& rows, const std::string& source) {
  if (!rows.is_array())
    throw std::invalid_argument(std::string("the body must be a JSON array of rows, not ") +
                                rows.type_name());
  nlohmann::json problems = nlohmann::json::array();
  std::vector<storage::LabelRecord> records;
  std::vector<storage::LesionBoxRecord> boxes;
  for (std::size_t i = 0; i < rows.size(); ++i)
    importRow(rows[i], i + 1, source, records, boxes, problems);
  if (!records.empty())
    index_.putLabels(records);  // one transaction for the valid labels of every row
  if (!boxes.empty())
    index_.putLesionBoxes(boxes);  // and one for their boxes (each checked against its image already)
  return {{"Rows", rows.size()},
          {"Stored", records.size()},
          {"BoxesStored", boxes.size()},
          {"Problems", problems}};
}

nlohmann::json StudyLabels::importCsv(std::string_view text, const std::string& source) {
  const imaging::CsvTable table = imaging::parseCsv(text);
  static const std::set<std::string> keyColumns = {"StudyInstanceUID", "AccessionNumber", "PatientID",
                                                   "StudyDate"};
  bool hasKey = false;
  for (const std::string& name : table.header)
    hasKey = hasKey || keyColumns.count(name) > 0;
  if (!hasKey)
    throw std::invalid_argument(
        "the CSV header names no study column (StudyInstanceUID, AccessionNumber, or PatientID and "
        "StudyDate)");
  nlohmann::json problems = nlohmann::json::array();
  for (const imaging::CsvProblem& problem : table.problems)
    problems.push_back(
        {{"Row", problem.row}, {"Message", "line " + std::to_string(problem.line) + ": " + problem.message}});
  std::vector<storage::LabelRecord> records;
  for (const imaging::CsvRecord& record : table.records) {
    nlohmann::json row = {{"Labels", nlohmann::json::object()}};
    for (std::size_t c = 0; c < table.header.size(); ++c) {
      const std::string& name = table.header[c];
      const std::string& cell = record.fields[c];
      if (keyColumns.count(name) > 0) {
        row[name] = cell;
      } else if (!cell.empty()) {  // an empty cell gives no label
        char* end = nullptr;
        const double value = std::strtod(cell.c_str(), &end);
        row["Labels"][name] = end != nullptr && *end == '\0' ? nlohmann::json(value) : nlohmann::json(cell);
      }
    }
    std::vector<storage::LesionBoxRecord> noBoxes;  // CSV rows carry labels only
    importRow(row, record.row, source, records, noBoxes, problems);
  }
  if (!records.empty())
    index_.putLabels(records);
  return {{"Rows", table.records.size() + table.problems.size()},
          {"Stored", records.size()},
          {"Problems", problems}};
}

}  // namespace comcl::plugin
