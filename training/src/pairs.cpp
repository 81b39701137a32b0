#include "comcl/training/pairs.h"

#include <algorithm>
#include <stdexcept>

namespace comcl::training {

namespace {

const char* const kAccepted =
    "accepted: \"instance\", or "
    "\"same-patient/<all|same|distinct>-studies/<all|same|distinct>-lateralities\" "
    "(the laterality part may be left out)";

std::vector<std::string> splitOn(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos)
      return parts;
    start = end + 1;
  }
}

// "same-study" / "same-studies" -> Same, for the given noun stem ("stud" or "lateralit").
bool parseCriterion(const std::string& part, const std::string& stem, Criterion& out) {
  const std::size_t dash = part.find('-');
  if (dash == std::string::npos)
    return false;
  const std::string head = part.substr(0, dash), noun = part.substr(dash + 1);
  if (noun != stem + "y" && noun != stem + "ies")
    return false;
  if (head == "all")
    out = Criterion::All;
  else if (head == "same")
    out = Criterion::Same;
  else if (head == "distinct" || head == "diff")
    out = Criterion::Distinct;
  else
    return false;
  return true;
}

const char* criterionName(Criterion c) {
  switch (c) {
    case Criterion::All:
      return "all";
    case Criterion::Same:
      return "same";
    case Criterion::Distinct:
      break;
  }
  return "distinct";
}

bool meets(Criterion criterion, bool equal) {
  switch (criterion) {
    case Criterion::All:
      return true;
    case Criterion::Same:
      return equal;
    case Criterion::Distinct:
      break;
  }
  return !equal;
}

}  // namespace

PairStrategy PairStrategy::parse(const std::string& text) {
  PairStrategy strategy;
  if (text == "instance") {
    strategy.samePatient = false;
    return strategy;
  }
  const std::vector<std::string> parts = splitOn(text, '/');
  strategy.laterality = Criterion::All;
  const bool ok = (parts.size() == 2 || parts.size() == 3) && parts[0] == "same-patient" &&
                  parseCriterion(parts[1], "stud", strategy.study) &&
                  (parts.size() == 2 || parseCriterion(parts[2], "lateralit", strategy.laterality));
  if (!ok)
    throw std::invalid_argument("unknown pair strategy \"" + text + "\"; " + kAccepted);
  return strategy;
}

std::string PairStrategy::toString() const {
  if (!samePatient)
    return "instance";
  return std::string("same-patient/") + criterionName(study) + "-studies/" + criterionName(laterality) +
         "-lateralities";
}

std::vector<PairStrategy> allMedAugStrategies() {
  std::vector<PairStrategy> all;
  for (Criterion study : {Criterion::All, Criterion::Same, Criterion::Distinct}) {
    for (Criterion laterality : {Criterion::All, Criterion::Same, Criterion::Distinct})
      all.push_back({true, study, laterality});
  }
  return all;
}

PositiveSampler::PositiveSampler(const TrainingSet& set, PairStrategy strategy) : strategy_(strategy) {
  const auto& images = set.images();
  candidates_.resize(images.size());
  if (!strategy_.samePatient) {
    for (std::size_t i = 0; i < images.size(); ++i)
      candidates_[i] = {static_cast<int>(i)};
    return;
  }
  for (const std::vector<int>& patientImages : set.imagesByPatient()) {
    for (int x : patientImages) {
      const TrainingImage& query = images[static_cast<std::size_t>(x)];
      std::vector<int>& out = candidates_[static_cast<std::size_t>(x)];
      for (int y : patientImages) {
        const TrainingImage& other = images[static_cast<std::size_t>(y)];
        // An unknown laterality never counts as "same" or "distinct": it only passes "all".
        const bool lateralityKnown =
            query.laterality != Laterality::Unknown && other.laterality != Laterality::Unknown;
        const bool lateralityOk =
            strategy_.laterality == Criterion::All ||
            (lateralityKnown && meets(strategy_.laterality, query.laterality == other.laterality)) ||
            (x == y && strategy_.laterality == Criterion::Same);
        if (meets(strategy_.study, query.study == other.study) && lateralityOk)
          out.push_back(y);
      }
    }
  }
}

int PositiveSampler::sample(int image, std::mt19937_64& rng) const {
  const std::vector<int>& options = candidates(image);
  if (options.empty())
    return image;
  std::uniform_int_distribution<std::size_t> pick(0, options.size() - 1);
  return options[pick(rng)];
}

PairStatistics PositiveSampler::statistics(int histogramBuckets) const {
  PairStatistics stats;
  stats.histogram.assign(static_cast<std::size_t>(std::max(2, histogramBuckets)), 0);
  std::int64_t totalOthers = 0;
  for (std::size_t x = 0; x < candidates_.size(); ++x) {
    const auto& options = candidates_[x];
    const auto others = static_cast<std::int64_t>(
        std::count_if(options.begin(), options.end(), [x](int y) { return y != static_cast<int>(x); }));
    ++stats.queries;
    if (options.empty())
      ++stats.fallback;
    else if (others == 0)
      ++stats.onlySelf;
    else
      ++stats.withOtherImage;
    totalOthers += others;
    stats.maxCandidates = std::max(stats.maxCandidates, others);
    const auto bucket = std::min<std::size_t>(static_cast<std::size_t>(others), stats.histogram.size() - 1);
    ++stats.histogram[bucket];
  }
  stats.meanCandidates =
      stats.queries ? static_cast<double>(totalOthers) / static_cast<double>(stats.queries) : 0;
  return stats;
}

}  // namespace comcl::training
