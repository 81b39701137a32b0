// What training sees of the index: every decoded, cached image with its patient, study and laterality (the
// metadata MedAug builds positive pairs from), its quality flag (CoMCL), and its labels. A snapshot: later
// changes to the index do not affect a loaded set, and `snapshotId` names exactly what was loaded.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "comcl/training/tensor_batch.h"

namespace comcl::training {

// A request the data cannot satisfy (empty index, absent label, ...): the message says what to do.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Laterality { Frontal, Lateral, Unknown };
std::string toString(Laterality laterality);
// ViewPosition -> laterality in MedAug's sense: AP/PA (also "AP SUPINE", "PA ERECT", ...) are frontal;
// LL, RL, LAT, LATERAL, L, R and lateral decubitus views are lateral; anything else is unknown.
Laterality lateralityOfView(const std::optional<std::string>& viewPosition);

struct TrainingImage {
  std::int64_t instanceId = 0;
  std::string resourceId;
  CachedImageRef cached;
  int patient = 0;  // dense index into TrainingSet::patientKeys
  int study = 0;    // dense index into TrainingSet::studyKeys
  Laterality laterality = Laterality::Unknown;
  std::optional<std::string> studyDate;    // YYYYMMDD
  std::optional<std::string> qualityFlag;  // good / usable / reject
};

// What makes two images of a patient "the same study" for MedAug: the StudyInstanceUID, or the StudyDate
// (for archives where each film is its own study, e.g. portable films taken the same day).
enum class StudyGrouping { Uid, Date };
StudyGrouping studyGroupingFromString(const std::string& text);  // "uid" | "date"; std::invalid_argument

class TrainingSet {
 public:
  // Every decoded, cached row of the index. Rows without a PatientID are their own patient and rows without
  // a StudyInstanceUID their own study (they can only pair with themselves). Labels: an instance-scope
  // label (key = resource id) wins over a study-scope one (key = StudyInstanceUID). With StudyGrouping::Date
  // the images of a patient with the same StudyDate form one study (images without a date keep their UID).
  static TrainingSet fromIndex(storage::Index& index, StudyGrouping grouping = StudyGrouping::Uid);

  const std::vector<TrainingImage>& images() const { return images_; }
  std::size_t size() const { return images_.size(); }
  const std::vector<std::string>& patientKeys() const { return patientKeys_; }
  const std::vector<std::string>& studyKeys() const { return studyKeys_; }
  // Every finding with at least one label, sorted.
  std::vector<std::string> findings() const;
  // The label of image i for `finding`: 1 positive, 0 negative, -1 uncertain, other integers for graded
  // labels; empty when absent.
  std::optional<double> label(std::size_t image, const std::string& finding) const;
  // Where images `indexes` (set positions) lie in the image cache, in the order given (loadBatch input).
  std::vector<CachedImageRef> cachedRefs(const std::vector<int>& indexes) const;
  // Images of each patient, in image order.
  std::vector<std::vector<int>> imagesByPatient() const;
  // A hash of the loaded rows (resource id, cache key, patient, study, view) and labels, e.g.
  // "data-5f3a9c0e12ab7d44": two sets with the same id hold the same training data.
  const std::string& snapshotId() const { return snapshotId_; }

 private:
  std::vector<TrainingImage> images_;
  std::vector<std::string> patientKeys_;
  std::vector<std::string> studyKeys_;
  std::map<std::string, std::vector<std::optional<double>>> labels_;  // finding -> per image
  std::string snapshotId_;
};

}  // namespace comcl::training
