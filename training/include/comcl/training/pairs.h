// MedAug positive pairs (methods.md §1.2): for a query image x, the candidate set S_c(x) holds the images of
// the same patient that meet a study criterion (all / same / distinct studies) and a laterality criterion
// (all / same / distinct lateralities). Each time x is drawn, one candidate is sampled uniformly as the
// positive's source image; when S_c(x) is empty the positive falls back to x itself (two augmentations of one
// image, as in MoCo). As in the paper's code, "same" criteria include x itself and "distinct" ones exclude
// it. "Instance" pairs (plain MoCo v2) always pair x with itself.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "comcl/training/dataset.h"

namespace comcl::training {

enum class Criterion { All, Same, Distinct };

struct PairStrategy {
  bool samePatient = true;  // false: instance pairs (MoCo v2)
  Criterion study = Criterion::Same;
  Criterion laterality = Criterion::All;

  // "instance", or "same-patient/<all|same|distinct>-stud(y|ies)/<all|same|distinct>-lateralit(y|ies)";
  // the laterality part may be left out (= all lateralities). Throws std::invalid_argument listing the
  // accepted forms.
  static PairStrategy parse(const std::string& text);
  std::string toString() const;  // the canonical form parse() accepts
  bool operator==(const PairStrategy& o) const {
    return samePatient == o.samePatient && study == o.study && laterality == o.laterality;
  }
};

// The nine MedAug criteria, study-major (all/same/distinct studies x all/same/distinct lateralities).
std::vector<PairStrategy> allMedAugStrategies();

struct PairStatistics {
  std::int64_t queries = 0;
  std::int64_t withOtherImage = 0;  // S_c(x) holds at least one image other than x: a metadata positive
  std::int64_t onlySelf = 0;        // S_c(x) = {x}: the positive is x itself ("same" criteria)
  std::int64_t fallback = 0;        // S_c(x) empty: falls back to x itself ("distinct" criteria)
  // histogram[n] = queries with n candidates other than x (the last bucket collects n >= its index).
  std::vector<std::int64_t> histogram;
  double meanCandidates = 0;  // other-image candidates per query
  std::int64_t maxCandidates = 0;
};

class PositiveSampler {
 public:
  PositiveSampler(const TrainingSet& set, PairStrategy strategy);
  const PairStrategy& strategy() const { return strategy_; }
  // S_c(x) for image x (may include x, see above); empty: fallback.
  const std::vector<int>& candidates(int image) const { return candidates_[static_cast<std::size_t>(image)]; }
  // The image the positive of x is made from: uniform over S_c(x), or x when S_c(x) is empty.
  int sample(int image, std::mt19937_64& rng) const;
  PairStatistics statistics(int histogramBuckets = 10) const;

 private:
  PairStrategy strategy_;
  std::vector<std::vector<int>> candidates_;
};

}  // namespace comcl::training
