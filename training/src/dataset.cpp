#include "comcl/training/dataset.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>
#include <unordered_map>

#include "comcl/storage/cache_key.h"
#include "comcl/training/stable_hash.h"

namespace comcl::training {

namespace {

std::string upper(std::string text) {
  for (char& c : text)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return text;
}

// Dense ids for keys in first-seen order.
class KeyIds {
 public:
  int idOf(const std::string& key, std::vector<std::string>& keys) {
    auto [it, inserted] = ids_.try_emplace(key, static_cast<int>(keys.size()));
    if (inserted)
      keys.push_back(key);
    return it->second;
  }

 private:
  std::unordered_map<std::string, int> ids_;
};

}  // namespace

std::string toString(Laterality laterality) {
  switch (laterality) {
    case Laterality::Frontal:
      return "frontal";
    case Laterality::Lateral:
      return "lateral";
    case Laterality::Unknown:
      break;
  }
  return "unknown";
}

Laterality lateralityOfView(const std::optional<std::string>& viewPosition) {
  if (!viewPosition)
    return Laterality::Unknown;
  const std::string view = upper(*viewPosition);
  // The first word decides: "AP SUPINE", "PA ERECT", "AP_AXIAL" are frontal.
  const std::string first = view.substr(0, view.find_first_of(" _-"));
  if (first == "AP" || first == "PA" || first == "APS" || first == "FRONTAL")
    return Laterality::Frontal;
  if (first == "LL" || first == "RL" || first == "LAT" || first == "LATERAL" || first == "L" ||
      first == "R" || first == "LLD" || first == "RLD" || first == "XTABLE")
    return Laterality::Lateral;
  return Laterality::Unknown;
}

StudyGrouping studyGroupingFromString(const std::string& text) {
  if (text == "uid")
    return StudyGrouping::Uid;
  if (text == "date")
    return StudyGrouping::Date;
  throw std::invalid_argument("study grouping must be uid or date, not \"" + text + "\"");
}

TrainingSet TrainingSet::fromIndex(storage::Index& index, StudyGrouping grouping) {
  TrainingSet set;
  const std::vector<storage::InstanceRecord> rows = index.decodedInstances();
  KeyIds patientIds, studyIds;
  std::unordered_map<std::string, std::size_t> imageOfResource;
  std::unordered_map<std::string, std::vector<std::size_t>> imagesOfStudyUid;
  StableHash hash;
  for (const storage::InstanceRecord& row : rows) {
    TrainingImage image;
    image.instanceId = row.id;
    image.resourceId = row.resourceId;
    image.cached = {*row.cacheSlot, storage::cacheKey(row.resourceId)};
    const std::string patientKey =
        row.patientKey && !row.patientKey->empty() ? *row.patientKey : "(row " + std::to_string(row.id) + ")";
    std::string studyKey = !row.studyInstanceUid.empty() ? patientKey + "/" + row.studyInstanceUid
                                                         : "(row " + std::to_string(row.id) + ")";
    if (grouping == StudyGrouping::Date && row.studyDate && !row.studyDate->empty())
      studyKey = patientKey + "/date " + *row.studyDate;
    image.patient = patientIds.idOf(patientKey, set.patientKeys_);
    image.study = studyIds.idOf(studyKey, set.studyKeys_);
    image.laterality = lateralityOfView(row.viewPosition);
    image.studyDate = row.studyDate;
    if (auto quality = index.quality(row.id))
      image.qualityFlag = quality->flag;
    hash.add(row.resourceId);
    hash.add(std::to_string(image.cached.key));
    hash.add(patientKey);
    hash.add(studyKey);
    hash.add(toString(image.laterality));
    imageOfResource.emplace(row.resourceId, set.images_.size());
    if (!row.studyInstanceUid.empty())
      imagesOfStudyUid[row.studyInstanceUid].push_back(set.images_.size());
    set.images_.push_back(std::move(image));
  }

  // Study labels first, then instance labels over them.
  const std::vector<storage::LabelRecord> labels = index.allLabels();
  auto column = [&set](const std::string& finding) -> std::vector<std::optional<double>>& {
    auto& values = set.labels_[finding];
    values.resize(set.images_.size());
    return values;
  };
  for (const char* scope : {"study", "instance"}) {
    for (const storage::LabelRecord& label : labels) {
      if (label.scope != scope)
        continue;
      if (label.scope == "study") {
        auto it = imagesOfStudyUid.find(label.key);
        if (it == imagesOfStudyUid.end())
          continue;
        for (std::size_t i : it->second)
          column(label.finding)[i] = label.value;
      } else {
        auto it = imageOfResource.find(label.key);
        if (it != imageOfResource.end())
          column(label.finding)[it->second] = label.value;
      }
    }
  }
  for (const auto& [finding, values] : set.labels_) {
    hash.add(finding);
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (values[i]) {
        hash.add(std::to_string(i));
        hash.add(*values[i]);
      }
    }
  }
  set.snapshotId_ = hash.id("data");
  return set;
}

std::vector<std::string> TrainingSet::findings() const {
  std::vector<std::string> names;
  for (const auto& [finding, values] : labels_) {
    if (std::any_of(values.begin(), values.end(), [](const auto& v) { return v.has_value(); }))
      names.push_back(finding);
  }
  return names;
}

std::optional<double> TrainingSet::label(std::size_t image, const std::string& finding) const {
  auto it = labels_.find(finding);
  if (it == labels_.end() || image >= it->second.size())
    return std::nullopt;
  return it->second[image];
}

std::vector<CachedImageRef> TrainingSet::cachedRefs(const std::vector<int>& indexes) const {
  std::vector<CachedImageRef> refs;
  refs.reserve(indexes.size());
  for (int i : indexes)
    refs.push_back(images_.at(static_cast<std::size_t>(i)).cached);
  return refs;
}

std::vector<std::vector<int>> TrainingSet::imagesByPatient() const {
  std::vector<std::vector<int>> byPatient(patientKeys_.size());
  for (std::size_t i = 0; i < images_.size(); ++i)
    byPatient[static_cast<std::size_t>(images_[i].patient)].push_back(static_cast<int>(i));
  return byPatient;
}

}  // namespace comcl::training
