// Image quality flags: good / usable / reject, with the reasons, from the metrics of quality.h.
//
// The metrics (and so the thresholds) are those measured by measureQuality() on the normalised, letterboxed
// cache image: default cache size 256 x 256, inside the content rectangle (letterbox padding excluded). A
// cache of another size changes sharpness and noise (both are per-pixel measures), so thresholds for it must
// be recalibrated (bench/calibrate_quality, docs/quality.md). Only the low-resolution levels are in native
// pixels of the DICOM (Rows / Columns).
#pragma once

#include <string>
#include <vector>

#include "comcl/imaging/quality.h"

namespace comcl::imaging {

enum class QualityFlag { Good, Usable, Reject };             // ordered: a worse flag compares greater
const char* toString(QualityFlag flag);                      // "good", "usable", "reject"
QualityFlag qualityFlagFromString(const std::string& text);  // the inverse; throws std::invalid_argument

// One pair of levels per criterion: past the "usable" level the image is downgraded to usable, past the
// "reject" level to reject. "Past" means below for the measures where less is worse (sharpness, contrast,
// dynamic range, resolution) and above for the others (noise, clipping). A level that can never be passed
// (0 for a "below" rule, 1 for a clipping fraction) switches that level off. Defaults: docs/quality.md.
struct QualityThresholds {
  // "blurred": sharpness (variance of the Laplacian, 0..255 scale) below the level.
  double sharpnessUsable = 40.0;
  double sharpnessReject = 15.0;
  // "noisy": noise (Immerkaer's sigma, 0..255 scale) above the level.
  double noiseUsable = 2.6;
  double noiseReject = 5.0;
  // "underexposed" (too little dose: a light film whose dense parts saturate white): fraction of the body
  // region at the white extreme (bodyClipHigh) above the level. A film that is noisy (noise levels above)
  // and has no black at all (clipLow at most kLiftedBlackFraction: even the air is grey) is underexposed at
  // the same level as it is noisy: that is how too little dose looks once a window has been applied.
  double bodyClipHighUsable = 0.04;
  double bodyClipHighReject = 0.20;
  // "overexposed" (too much dose: a dark film whose lungs burn out to black): fraction of the body region at
  // the black extreme (bodyClipLow) above the level.
  double bodyClipLowUsable = 0.22;
  double bodyClipLowReject = 0.40;
  // "low-contrast": RMS contrast (0..1) below its level, or effective dynamic range (0..1) below its level.
  double contrastUsable = 0.12;
  double contrastReject = 0.06;
  double dynamicRangeUsable = 0.60;
  double dynamicRangeReject = 0.30;
  // "low-resolution": the native short side (min of DICOM Rows and Columns, pixels) below the level. The
  // defaults are tied to the 256 cache: below 256 the cache image is upsampled (usable), below 128 by more
  // than twice (reject). A real CR/DX film has a 2000-3000 px short side; sites that want to catch
  // downsampled secondary captures can raise shortSideUsable (e.g. to 1024).
  int shortSideUsable = 256;
  int shortSideReject = 128;
};

// clipLow at or below this counts as "no black at all" for the underexposure rule (a fraction of the
// content).
constexpr double kLiftedBlackFraction = 0.001;

// Throws std::invalid_argument naming the field for impossible values: negative or non-finite levels,
// fractions outside [0, 1], a reject level on the wrong side of its usable level (equal is allowed: the
// usable band is then empty).
void validate(const QualityThresholds& thresholds);

struct QualityAssessment {
  QualityFlag flag = QualityFlag::Good;  // the worst level over all criteria
  // Every criterion past its usable (or reject) level, in the fixed order of qualityReasons().
  std::vector<std::string> reasons;
};

// The reasons vocabulary, in the fixed order used by QualityAssessment::reasons: "blurred", "noisy",
// "underexposed", "overexposed", "low-contrast", "low-resolution".
const std::vector<std::string>& qualityReasons();

// Flags an image from its metrics (measureQuality on the cache image) and its native size (DICOM Rows and
// Columns; a size of 0 or less means unknown and skips the resolution criterion). Does not validate the
// thresholds (call validate() once when they are configured). NaN metrics count as the worst value.
QualityAssessment assessQuality(const QualityMetrics& metrics, int nativeRows, int nativeCols,
                                const QualityThresholds& thresholds = {});

}  // namespace comcl::imaging
