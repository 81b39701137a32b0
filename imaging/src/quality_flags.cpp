// Quality flags from the metrics: one rule per reason, each with a usable and a reject level; the flag is the
// worst level reached. Calibration of the defaults: docs/quality.md and bench/calibrate_quality.cpp.
#include "comcl/imaging/quality_flags.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace comcl::imaging {
namespace {

const std::vector<std::string> kReasons = {"blurred",     "noisy",        "underexposed",
                                           "overexposed", "low-contrast", "low-resolution"};
enum ReasonIndex {
  kBlurred,
  kNoisy,
  kUnderexposed,
  kOverexposed,
  kLowContrast,
  kLowResolution,
  kReasonCount
};

std::string number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

[[noreturn]] void fail(const std::string& message) {
  throw std::invalid_argument("QualityThresholds." + message);
}

void requireLevel(const char* name, double value) {
  if (!std::isfinite(value)) {
    fail(std::string(name) + " must be a finite number, not " + number(value));
  }
  if (value < 0) {
    fail(std::string(name) + " (" + number(value) + ") must not be negative");
  }
}

void requireFraction(const char* name, double value) {
  requireLevel(name, value);
  if (value > 1) {
    fail(std::string(name) + " (" + number(value) + ") is a fraction and must lie in [0, 1]");
  }
}

// Where less is worse (sharpness, contrast, ...) the reject level lies at or below the usable level.
void requireRejectBelow(const char* rejectName, double reject, const char* usableName, double usable) {
  if (reject > usable) {
    fail(std::string(rejectName) + " (" + number(reject) + ") must be at or below " + usableName + " (" +
         number(usable) + ")");
  }
}

void requireRejectAbove(const char* rejectName, double reject, const char* usableName, double usable) {
  if (reject < usable) {
    fail(std::string(rejectName) + " (" + number(reject) + ") must be at or above " + usableName + " (" +
         number(usable) + ")");
  }
}

// Level reached by a measure where less is worse; NaN counts as the worst value.
QualityFlag below(double value, double usable, double reject) {
  if (!(value >= reject)) {
    return QualityFlag::Reject;
  }
  return value < usable ? QualityFlag::Usable : QualityFlag::Good;
}

// Level reached by a measure where more is worse; NaN counts as the worst value.
QualityFlag above(double value, double usable, double reject) {
  if (!(value <= reject)) {
    return QualityFlag::Reject;
  }
  return value > usable ? QualityFlag::Usable : QualityFlag::Good;
}

}  // namespace

const char* toString(QualityFlag flag) {
  switch (flag) {
    case QualityFlag::Good:
      return "good";
    case QualityFlag::Usable:
      return "usable";
    case QualityFlag::Reject:
      return "reject";
  }
  return "unknown";
}

QualityFlag qualityFlagFromString(const std::string& text) {
  for (QualityFlag flag : {QualityFlag::Good, QualityFlag::Usable, QualityFlag::Reject}) {
    if (text == toString(flag)) {
      return flag;
    }
  }
  throw std::invalid_argument("unknown quality flag '" + text + "' (expected good, usable or reject)");
}

const std::vector<std::string>& qualityReasons() {
  return kReasons;
}

void validate(const QualityThresholds& t) {
  requireLevel("sharpnessUsable", t.sharpnessUsable);
  requireLevel("sharpnessReject", t.sharpnessReject);
  requireRejectBelow("sharpnessReject", t.sharpnessReject, "sharpnessUsable", t.sharpnessUsable);
  requireLevel("noiseUsable", t.noiseUsable);
  requireLevel("noiseReject", t.noiseReject);
  requireRejectAbove("noiseReject", t.noiseReject, "noiseUsable", t.noiseUsable);
  requireFraction("bodyClipHighUsable", t.bodyClipHighUsable);
  requireFraction("bodyClipHighReject", t.bodyClipHighReject);
  requireRejectAbove("bodyClipHighReject", t.bodyClipHighReject, "bodyClipHighUsable", t.bodyClipHighUsable);
  requireFraction("bodyClipLowUsable", t.bodyClipLowUsable);
  requireFraction("bodyClipLowReject", t.bodyClipLowReject);
  requireRejectAbove("bodyClipLowReject", t.bodyClipLowReject, "bodyClipLowUsable", t.bodyClipLowUsable);
  requireFraction("contrastUsable", t.contrastUsable);
  requireFraction("contrastReject", t.contrastReject);
  requireRejectBelow("contrastReject", t.contrastReject, "contrastUsable", t.contrastUsable);
  requireFraction("dynamicRangeUsable", t.dynamicRangeUsable);
  requireFraction("dynamicRangeReject", t.dynamicRangeReject);
  requireRejectBelow("dynamicRangeReject", t.dynamicRangeReject, "dynamicRangeUsable", t.dynamicRangeUsable);
  requireLevel("shortSideUsable", t.shortSideUsable);
  requireLevel("shortSideReject", t.shortSideReject);
  requireRejectBelow("shortSideReject", t.shortSideReject, "shortSideUsable", t.shortSideUsable);
}

QualityAssessment assessQuality(const QualityMetrics& m, int nativeRows, int nativeCols,
                                const QualityThresholds& t) {
  QualityFlag levels[kReasonCount] = {};
  levels[kBlurred] = below(m.sharpness, t.sharpnessUsable, t.sharpnessReject);
  levels[kNoisy] = above(m.noise, t.noiseUsable, t.noiseReject);
  levels[kUnderexposed] = above(m.bodyClipHigh, t.bodyClipHighUsable, t.bodyClipHighReject);
  if (m.clipLow <= kLiftedBlackFraction) {  // mottled and lifted: nothing is black, not even the air
    levels[kUnderexposed] = std::max(levels[kUnderexposed], levels[kNoisy]);
  }
  levels[kOverexposed] = above(m.bodyClipLow, t.bodyClipLowUsable, t.bodyClipLowReject);
  levels[kLowContrast] = std::max(below(m.contrast, t.contrastUsable, t.contrastReject),
                                  below(m.dynamicRange, t.dynamicRangeUsable, t.dynamicRangeReject));
  if (nativeRows > 0 && nativeCols > 0) {
    levels[kLowResolution] = below(std::min(nativeRows, nativeCols), t.shortSideUsable, t.shortSideReject);
  }
  QualityAssessment assessment;
  for (int r = 0; r < kReasonCount; ++r) {
    if (levels[r] != QualityFlag::Good) {
      assessment.reasons.push_back(kReasons[static_cast<std::size_t>(r)]);
      assessment.flag = std::max(assessment.flag, levels[r]);
    }
  }
  return assessment;
}

}  // namespace comcl::imaging
