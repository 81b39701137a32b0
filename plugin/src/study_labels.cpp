#include "study_labels.h"

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
  return {{"StudyInstanceUID", studyInstanceUid}, {"Labels", labels}};
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
                            std::vector<storage::LabelRecord>& records, nlohmann::json& problems) {
  const auto report = [&](const std::string& message) {
    problems.push_back({{"Row", number}, {"Message", message}});
  };
  if (!row.is_object() || !row.contains("Labels")) {
    report("a row is a JSON object with the study and \"Labels\"");
    return;
  }
  std::string problem;
  const std::string study = resolveStudy(row, problem);
  if (!problem.empty()) {
    report(problem);
    return;
  }
  std::vector<std::string> labelProblems;
  for (storage::LabelRecord& record : checked(study, row.at("Labels"), source, labelProblems))
    records.push_back(std::move(record));
  for (const std::string& message : labelProblems)
    report(message);
}

nlohmann::json StudyLabels::importRows(const nlohmann::json& rows, const std::string& source) {
  if (!rows.is_array())
    throw std::invalid_argument(std::string("the body must be a JSON array of rows, not ") +
                                rows.type_name());
  nlohmann::json problems = nlohmann::json::array();
  std::vector<storage::LabelRecord> records;
  for (std::size_t i = 0; i < rows.size(); ++i)
    importRow(rows[i], i + 1, source, records, problems);
  if (!records.empty())
    index_.putLabels(records);  // one transaction for the valid labels of every row
  return {{"Rows", rows.size()}, {"Stored", records.size()}, {"Problems", problems}};
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
    importRow(row, record.row, source, records, problems);
  }
  if (!records.empty())
    index_.putLabels(records);
  return {{"Rows", table.records.size() + table.problems.size()},
          {"Stored", records.size()},
          {"Problems", problems}};
}

}  // namespace comcl::plugin
