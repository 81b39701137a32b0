// Quality flags: every rule on the right side of its levels, accumulation in a fixed order, the worst level
// winning, validation naming the field, and the defaults on the real radiographs in ../shared/data.
#include "comcl/imaging/quality_flags.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "comcl/imaging/decode.h"
#include "comcl/imaging/png.h"
#include "comcl/imaging/resize.h"

namespace comcl::imaging {
namespace {

namespace fs = std::filesystem;

// Metrics well inside every "good" level of the thresholds, some black in the frame (air) so that the
// lifted-film rule stays out of the way.
QualityMetrics goodMetrics(const QualityThresholds& t) {
  QualityMetrics m;
  m.sharpness = 2 * t.sharpnessUsable + 1;
  m.noise = t.noiseUsable / 2;
  m.contrast = std::min(1.0, 2 * t.contrastUsable + 0.01);
  m.dynamicRange = std::min(1.0, t.dynamicRangeUsable + 0.2);
  m.clipLow = 0.1;
  m.clipHigh = 0.0;
  m.meanIntensity = 0.5;
  m.bodyClipLow = t.bodyClipLowUsable / 2;
  m.bodyClipHigh = t.bodyClipHighUsable / 2;
  m.bodyMean = 0.5;
  return m;
}

constexpr int kGoodSide = 2048;

// One rule: its reason and how to put a metric a little past a level (`past`) or exactly at it.
struct Rule {
  std::string reason;
  // Sets the metric (or the native size) to `level` moved by `step` to the bad side.
  std::function<void(QualityMetrics&, int& side, const QualityThresholds&, bool reject, double step)> set;
};

std::vector<Rule> rules() {
  return {
      {"blurred", [](QualityMetrics& m, int&, const QualityThresholds& t, bool reject,
                     double step) { m.sharpness = (reject ? t.sharpnessReject : t.sharpnessUsable) - step; }},
      {"noisy", [](QualityMetrics& m, int&, const QualityThresholds& t, bool reject,
                   double step) { m.noise = (reject ? t.noiseReject : t.noiseUsable) + step; }},
      {"underexposed",
       [](QualityMetrics& m, int&, const QualityThresholds& t, bool reject, double step) {
         m.bodyClipHigh = (reject ? t.bodyClipHighReject : t.bodyClipHighUsable) + step * 0.01;
       }},
      {"overexposed",
       [](QualityMetrics& m, int&, const QualityThresholds& t, bool reject, double step) {
         m.bodyClipLow = (reject ? t.bodyClipLowReject : t.bodyClipLowUsable) + step * 0.01;
       }},
      {"low-contrast",
       [](QualityMetrics& m, int&, const QualityThresholds& t, bool reject, double step) {
         m.contrast = (reject ? t.contrastReject : t.contrastUsable) - step * 0.01;
       }},
      {"low-contrast",
       [](QualityMetrics& m, int&, const QualityThresholds& t, bool reject, double step) {
         m.dynamicRange = (reject ? t.dynamicRangeReject : t.dynamicRangeUsable) - step * 0.01;
       }},
      {"low-resolution",
       [](QualityMetrics&, int& side, const QualityThresholds& t, bool reject, double step) {
         side = (reject ? t.shortSideReject : t.shortSideUsable) - static_cast<int>(std::ceil(step));
       }},
  };
}

QualityAssessment assessWith(const Rule& rule, const QualityThresholds& t, bool reject, double step) {
  QualityMetrics m = goodMetrics(t);
  int side = kGoodSide;
  rule.set(m, side, t, reject, step);
  return assessQuality(m, side, side + 100, t);
}

TEST(QualityFlags, NamesRoundTripAndUnknownNamesThrow) {
  for (QualityFlag flag : {QualityFlag::Good, QualityFlag::Usable, QualityFlag::Reject}) {
    EXPECT_EQ(qualityFlagFromString(toString(flag)), flag);
  }
  EXPECT_STREQ(toString(QualityFlag::Good), "good");
  EXPECT_STREQ(toString(QualityFlag::Usable), "usable");
  EXPECT_STREQ(toString(QualityFlag::Reject), "reject");
  EXPECT_THROW(qualityFlagFromString("Good"), std::invalid_argument);
  EXPECT_THROW(qualityFlagFromString(""), std::invalid_argument);
  EXPECT_LT(QualityFlag::Good, QualityFlag::Usable);
  EXPECT_LT(QualityFlag::Usable, QualityFlag::Reject);
}

TEST(QualityFlags, ReasonVocabularyIsLowerCaseHyphenatedAndUnique) {
  const auto& reasons = qualityReasons();
  EXPECT_EQ(reasons, (std::vector<std::string>{"blurred", "noisy", "underexposed", "overexposed",
                                               "low-contrast", "low-resolution"}));
  for (const std::string& r : reasons) {
    EXPECT_TRUE(std::all_of(r.begin(), r.end(), [](char c) { return (c >= 'a' && c <= 'z') || c == '-'; }))
        << r;
  }
}

TEST(QualityFlags, CleanMetricsAreGood) {
  const QualityThresholds t;
  const QualityAssessment a = assessQuality(goodMetrics(t), kGoodSide, kGoodSide, t);
  EXPECT_EQ(a.flag, QualityFlag::Good);
  EXPECT_TRUE(a.reasons.empty());
}

TEST(QualityFlags, EveryRuleTriggersOnTheRightSideOfItsLevels) {
  const QualityThresholds t;
  for (const Rule& rule : rules()) {
    SCOPED_TRACE(rule.reason);
    // At the usable level exactly: still good (levels are strict).
    const QualityAssessment atUsable = assessWith(rule, t, false, 0.0);
    EXPECT_EQ(atUsable.flag, QualityFlag::Good);
    EXPECT_TRUE(atUsable.reasons.empty());
    // Just past the usable level (but well before the reject level): usable, this reason only.
    const QualityAssessment usable = assessWith(rule, t, false, 0.5);
    EXPECT_EQ(usable.flag, QualityFlag::Usable);
    EXPECT_EQ(usable.reasons, std::vector<std::string>{rule.reason});
    // At the reject level exactly: usable; just past it: reject, same reason.
    EXPECT_EQ(assessWith(rule, t, true, 0.0).flag, QualityFlag::Usable);
    const QualityAssessment rejected = assessWith(rule, t, true, 0.5);
    EXPECT_EQ(rejected.flag, QualityFlag::Reject);
    EXPECT_EQ(rejected.reasons, std::vector<std::string>{rule.reason});
  }
}

TEST(QualityFlags, RulesFollowTheThresholdsGiven) {
  // Moving a level moves the decision: the same metrics flip when the level crosses them.
  QualityThresholds t;
  QualityMetrics m = goodMetrics(t);
  m.sharpness = 100;
  t.sharpnessUsable = 99;
  EXPECT_EQ(assessQuality(m, kGoodSide, kGoodSide, t).flag, QualityFlag::Good);
  t.sharpnessUsable = 101;
  EXPECT_EQ(assessQuality(m, kGoodSide, kGoodSide, t).flag, QualityFlag::Usable);
  t.sharpnessReject = 101;
  EXPECT_EQ(assessQuality(m, kGoodSide, kGoodSide, t).flag, QualityFlag::Reject);
}

TEST(QualityFlags, MottledFilmWithoutAnyBlackIsUnderexposedAsWellAsNoisy) {
  const QualityThresholds t;
  QualityMetrics m = goodMetrics(t);
  m.noise = t.noiseUsable + 0.5;
  m.clipLow = 0.05;  // the air is black: noisy only
  EXPECT_EQ(assessQuality(m, kGoodSide, kGoodSide, t).reasons, std::vector<std::string>{"noisy"});
  m.clipLow = kLiftedBlackFraction;  // nothing black: too little dose
  QualityAssessment a = assessQuality(m, kGoodSide, kGoodSide, t);
  EXPECT_EQ(a.flag, QualityFlag::Usable);
  EXPECT_EQ(a.reasons, (std::vector<std::string>{"noisy", "underexposed"}));
  m.noise = t.noiseReject + 0.5;
  a = assessQuality(m, kGoodSide, kGoodSide, t);
  EXPECT_EQ(a.flag, QualityFlag::Reject);
  EXPECT_EQ(a.reasons, (std::vector<std::string>{"noisy", "underexposed"}));
  // A lifted film without noise is not underexposed by that rule.
  m.noise = t.noiseUsable / 2;
  EXPECT_EQ(assessQuality(m, kGoodSide, kGoodSide, t).flag, QualityFlag::Good);
}

TEST(QualityFlags, UnknownNativeSizeSkipsTheResolutionRule) {
  const QualityThresholds t;
  EXPECT_EQ(assessQuality(goodMetrics(t), 0, 0, t).flag, QualityFlag::Good);
  EXPECT_EQ(assessQuality(goodMetrics(t), -1, 100, t).flag, QualityFlag::Good);
  // The short side counts, whichever of rows and columns it is.
  const int small = t.shortSideReject - 1;
  EXPECT_EQ(assessQuality(goodMetrics(t), small, kGoodSide, t).flag, QualityFlag::Reject);
  EXPECT_EQ(assessQuality(goodMetrics(t), kGoodSide, small, t).flag, QualityFlag::Reject);
}

TEST(QualityFlags, ReasonsAccumulateInFixedOrderAndTheWorstLevelWins) {
  const QualityThresholds t;
  const std::vector<Rule> all = rules();
  // Every rule past its usable level, applied in reverse order: the reasons still come in vocabulary order.
  QualityMetrics m = goodMetrics(t);
  int side = kGoodSide;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    it->set(m, side, t, false, 0.5);
  }
  QualityAssessment a = assessQuality(m, side, side, t);
  EXPECT_EQ(a.flag, QualityFlag::Usable);
  EXPECT_EQ(a.reasons, qualityReasons());
  // One of them past its reject level makes the whole image a reject; the reasons stay the same.
  for (const Rule& rule : all) {
    SCOPED_TRACE(rule.reason);
    QualityMetrics worse = m;
    int worseSide = side;
    rule.set(worse, worseSide, t, true, 0.5);
    a = assessQuality(worse, worseSide, worseSide, t);
    EXPECT_EQ(a.flag, QualityFlag::Reject);
    EXPECT_EQ(a.reasons, qualityReasons());
  }
  // Two reasons, one usable and one reject: both listed, in order, and reject wins.
  m = goodMetrics(t);
  m.sharpness = t.sharpnessUsable - 1;         // blurred: usable
  m.bodyClipLow = t.bodyClipLowReject + 0.01;  // overexposed: reject
  a = assessQuality(m, kGoodSide, kGoodSide, t);
  EXPECT_EQ(a.flag, QualityFlag::Reject);
  EXPECT_EQ(a.reasons, (std::vector<std::string>{"blurred", "overexposed"}));
}

TEST(QualityFlags, NanMetricsCountAsTheWorstValue) {
  const QualityThresholds t;
  QualityMetrics m = goodMetrics(t);
  m.noise = std::numeric_limits<double>::quiet_NaN();
  const QualityAssessment a = assessQuality(m, kGoodSide, kGoodSide, t);
  EXPECT_EQ(a.flag, QualityFlag::Reject);
  EXPECT_EQ(a.reasons, std::vector<std::string>{"noisy"});
}

TEST(QualityFlags, DefaultThresholdsAreValidAndOrdered) {
  const QualityThresholds t;
  EXPECT_NO_THROW(validate(t));
  EXPECT_LT(t.sharpnessReject, t.sharpnessUsable);
  EXPECT_GT(t.noiseReject, t.noiseUsable);
  EXPECT_GT(t.bodyClipHighReject, t.bodyClipHighUsable);
  EXPECT_GT(t.bodyClipLowReject, t.bodyClipLowUsable);
  EXPECT_LT(t.contrastReject, t.contrastUsable);
  EXPECT_LT(t.dynamicRangeReject, t.dynamicRangeUsable);
  EXPECT_LT(t.shortSideReject, t.shortSideUsable);
}

void expectInvalid(const std::function<void(QualityThresholds&)>& change, const std::string& field) {
  QualityThresholds t;
  change(t);
  try {
    validate(t);
    ADD_FAILURE() << "validate accepted an impossible " << field;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
  }
}

TEST(QualityFlags, ValidateRejectsImpossibleValuesNamingTheField) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  // Negative.
  expectInvalid([](QualityThresholds& t) { t.sharpnessReject = -1; }, "sharpnessReject");
  expectInvalid([](QualityThresholds& t) { t.noiseUsable = -0.5; }, "noiseUsable");
  expectInvalid([](QualityThresholds& t) { t.shortSideReject = -2; }, "shortSideReject");
  expectInvalid([](QualityThresholds& t) { t.bodyClipLowUsable = -0.1; }, "bodyClipLowUsable");
  // Not a number, infinite.
  expectInvalid([nan](QualityThresholds& t) { t.sharpnessUsable = nan; }, "sharpnessUsable");
  expectInvalid([nan](QualityThresholds& t) { t.contrastReject = nan; }, "contrastReject");
  expectInvalid([inf](QualityThresholds& t) { t.noiseReject = inf; }, "noiseReject");
  // Fractions outside [0, 1].
  expectInvalid([](QualityThresholds& t) { t.bodyClipHighReject = 1.5; }, "bodyClipHighReject");
  expectInvalid([](QualityThresholds& t) { t.bodyClipLowReject = 2; }, "bodyClipLowReject");
  expectInvalid([](QualityThresholds& t) { t.dynamicRangeUsable = 1.2; }, "dynamicRangeUsable");
  expectInvalid([](QualityThresholds& t) { t.contrastUsable = 1.01; }, "contrastUsable");
  // Reject level on the wrong side of the usable level.
  expectInvalid([](QualityThresholds& t) { t.sharpnessReject = t.sharpnessUsable + 1; }, "sharpnessReject");
  expectInvalid([](QualityThresholds& t) { t.noiseReject = t.noiseUsable - 0.1; }, "noiseReject");
  expectInvalid([](QualityThresholds& t) { t.bodyClipHighReject = t.bodyClipHighUsable / 2; },
                "bodyClipHighReject");
  expectInvalid([](QualityThresholds& t) { t.bodyClipLowReject = t.bodyClipLowUsable / 2; },
                "bodyClipLowReject");
  expectInvalid([](QualityThresholds& t) { t.contrastReject = t.contrastUsable + 0.01; }, "contrastReject");
  expectInvalid([](QualityThresholds& t) { t.dynamicRangeReject = t.dynamicRangeUsable + 0.01; },
                "dynamicRangeReject");
  expectInvalid([](QualityThresholds& t) { t.shortSideReject = t.shortSideUsable + 1; }, "shortSideReject");
  // The message also names the level it conflicts with.
  QualityThresholds t;
  t.sharpnessReject = 400;
  try {
    validate(t);
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("sharpnessUsable"), std::string::npos) << e.what();
  }
  // Equal levels (an empty usable band) and switched-off levels are allowed.
  t = QualityThresholds{};
  t.noiseReject = t.noiseUsable;
  t.sharpnessUsable = 0;
  t.sharpnessReject = 0;
  t.bodyClipLowUsable = 1;
  t.bodyClipLowReject = 1;
  EXPECT_NO_THROW(validate(t));
}

// ---------------------------------------------------------------------------------------------------------
// The defaults on the real radiographs (docs/quality.md; films named by file only, CC licences: see
// ../shared/data/*/ATTRIBUTION.md).

const fs::path kData = COMCL_SHARED_DATA;

// Measured as bench/calibrate_quality measures a PNG: the decoder's percentile window (0.5 % at each end,
// as for a DICOM without a window), letterboxed to the 256 cache.
QualityAssessment assessPng(const fs::path& path) {
  Image image = toGrey(readPng(path.string()));
  std::vector<float> sorted = image.pixels;
  std::sort(sorted.begin(), sorted.end());
  const double clip = DecodeOptions{}.percentileClip;
  const double lo = sorted[static_cast<std::size_t>(clip * static_cast<double>(sorted.size()))];
  const double hi = sorted[static_cast<std::size_t>((1 - clip) * static_cast<double>(sorted.size() - 1))];
  for (float& v : image.pixels) {
    v = static_cast<float>(std::clamp((v - lo) / std::max(hi - lo, 1e-6), 0.0, 1.0));
  }
  const Letterboxed boxed = letterbox(image, 256);
  return assessQuality(measureQuality(boxed.image, boxed.content), image.height, image.width);
}

bool hasReason(const QualityAssessment& a, const std::string& reason) {
  return std::find(a.reasons.begin(), a.reasons.end(), reason) != a.reasons.end();
}

TEST(QualityFlagsRealData, VisiblyPoorFilmsAreNotGood) {
  const fs::path dir = kData / "covid_chestxray_subset" / "images";
  if (!fs::exists(dir)) {
    GTEST_SKIP() << "no real data at " << dir;
  }
  // Looked at one by one (docs/quality.md): a grainy, edge-enhanced print; two soft lateral films; a
  // washed-out film whose abdomen and mediastinum saturate white.
  const std::vector<std::pair<std::string, std::string>> poor = {
      {"covid-19-pneumonia-8.png", "noisy"},
      {"000002-7.png", "blurred"},
      {"000002-29.png", "blurred"},
      {"14d81f378173b86cc53f21d2d67040_jumbo.png", "underexposed"},
  };
  for (const auto& [file, reason] : poor) {
    SCOPED_TRACE(file);
    ASSERT_TRUE(fs::exists(dir / file));
    const QualityAssessment a = assessPng(dir / file);
    EXPECT_NE(a.flag, QualityFlag::Good);
    EXPECT_TRUE(hasReason(a, reason));
  }
}

TEST(QualityFlagsRealData, MostMhhFilmsAreKeptAndMostAreGood) {
  const fs::path dir = kData / "mhh_covid_cxr" / "dicom";
  if (!fs::exists(dir)) {
    GTEST_SKIP() << "no real data at " << dir;
  }
  DecodeOptions options;
  options.size = 256;
  options.keepColour = false;
  int total = 0;
  int good = 0;
  int rejected = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".dcm") {
      continue;
    }
    const DecodeResult decoded = decodeFile(entry.path().string(), options);
    ASSERT_EQ(decoded.outcome, DecodeOutcome::Decoded) << entry.path() << ": " << decoded.reason;
    const QualityAssessment a = assessQuality(measureQuality(decoded.image, decoded.report.content),
                                              decoded.metadata.rows, decoded.metadata.cols);
    ++total;
    good += a.flag == QualityFlag::Good ? 1 : 0;
    rejected += a.flag == QualityFlag::Reject ? 1 : 0;
    // The data set was downsampled to a 256 px short side: not a resolution problem at the cache size.
    EXPECT_FALSE(hasReason(a, "low-resolution")) << entry.path();
  }
  ASSERT_GT(total, 200);
  EXPECT_LE(rejected, total / 20) << rejected << " of " << total << " rejected";
  EXPECT_GE(good, total * 9 / 10) << good << " of " << total << " good";
}

}  // namespace
}  // namespace comcl::imaging
