#include "study_labels.h"

#include <cmath>
#include <set>
#include <utility>

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
  const std::string patient = text("PatientID"), date = text("StudyDate");
  if (patient.empty() || date.empty()) {
    problem = "a row names its study by StudyInstanceUID, or by PatientID and StudyDate (strings)";
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

nlohmann::json StudyLabels::importRows(const nlohmann::json& rows, const std::string& source) {
  if (!rows.is_array())
    throw std::invalid_argument(std::string("the body must be a JSON array of rows, not ") +
                                rows.type_name());
  nlohmann::json problems = nlohmann::json::array();
  std::vector<storage::LabelRecord> records;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& row = rows[i];
    const auto report = [&](const std::string& message) {
      problems.push_back({{"Row", i + 1}, {"Message", message}});
    };
    if (!row.is_object() || !row.contains("Labels")) {
      report("a row is a JSON object with the study and \"Labels\"");
      continue;
    }
    std::string problem;
    const std::string study = resolveStudy(row, problem);
    if (!problem.empty()) {
      report(problem);
      continue;
    }
    std::vector<std::string> labelProblems;
    for (storage::LabelRecord& record : checked(study, row.at("Labels"), source, labelProblems))
      records.push_back(std::move(record));
    for (const std::string& message : labelProblems)
      report(message);
  }
  if (!records.empty())
    index_.putLabels(records);  // one transaction for the valid labels of every row
  return {{"Rows", rows.size()}, {"Stored", records.size()}, {"Problems", problems}};
}

}  // namespace comcl::plugin
