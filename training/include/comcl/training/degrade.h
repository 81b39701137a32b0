// Synthetic image degradations for quality-aware contrastive learning (CoMCL's low-quality views), computed
// as batched tensor ops on the batch's own device. docs/methods/comcl.md ("Degradation model") says which
// parts follow the paper's code and which are our choices.
//
// Images are floating-point [N, C, H, W] in [0, 1]: C = 1 for radiographs (bright = dense), C = 3 for fundus
// photographs (RGB). Every degradation has a severity in [0, 1]: 0 leaves the sample exactly as it was, 1 is
// the strongest setting (for the fundus kinds, the strength of the paper's degrade_eyeq.py).
//
// Randomness. Per-sample parameters are drawn on the CPU from a caller-owned std::mt19937_64 (each draw u is
// one generator output's top 53 bits / 2^53, the same under every standard library), then applied on the
// device. A kind's random "shape" (a grid's period, where the spots are, a noise seed) is drawn in a fixed
// number of draws that does not depend on the severity, so one seed swept over severities varies only the
// strength. Per-pixel noise fields are generated on the CPU by a torch CPU generator seeded with the step's
// recorded seed and moved to the device: the same seed gives the same field on CPU and CUDA (and on every run
// with the same LibTorch version).
//
// Order of the draws, sample after sample:
//   - with fundusCodes: one u picks the code; its kinds are the sample's kinds;
//   - otherwise: one u for how many kinds (uniform in [minKinds, maxKinds]), then one u per kind picking it
//     from the kinds not yet taken (Underexposure and Overexposure exclude each other; if the pool runs out
//     the sample gets fewer kinds);
//   - then, for each kind in canonical order (the order of DegradationKind): one u for the severity (uniform
//     in [severityMin, severityMax]), then the kind's shape draws (listed at each shape below).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <variant>
#include <vector>

namespace comcl::training {

// Canonical order: a sample's kinds are applied in this order (acquisition, then detector, then storage).
// Severity mappings (s = severity, H = image height in pixels, x = pixel value; "synth.cpp" marks the
// strength of imaging/src/synth.cpp's degraded films, reached at s = 1):
enum class DegradationKind {
  // Radiographs (any channel count).
  // Gain field 1 + 0.3 s (cos a X + sin a Y) - 0.3 s k (X^2 + Y^2 - 2/3), X and Y in [-1, 1].
  UnevenIllumination,
  // x' = (1 - 0.38 s) x + 0.42 s, then noise of sigma s (0.02 + 0.03 x') (synth.cpp).
  Underexposure,
  // x' = (1 + 0.6 s) x - 0.6 s (synth.cpp).
  Overexposure,
  // Cosine grid of amplitude 0.06 s; defective one-pixel detector lines of +-0.15 s.
  GridLines,
  // Gaussian, sigma = 0.01 s H pixels.
  Blur,
  // Area down-sampling by 1 + 3 s, bilinear back up (synth.cpp's factor 4).
  LowResolution,
  // Quantum-like noise of sigma s (0.045 + 0.045 x): bright (dense) is noisier (synth.cpp).
  Noise,
  // 8x8 block DCT quantised with the JPEG luminance table at IJG quality 95 - 85 s.
  JpegBlocks,
  // Fundus photographs, degrade_eyeq.py (FundusIllumination needs C = 1 or 3; the others any C).
  // Colour factors 1 + s (f - 1); a halo of s times the image mean; a hole of s times its depth.
  FundusIllumination,
  // 5-10 blurred spots of amplitude s A(radius).
  FundusSpots,
  // Gaussian, sigma = s sigmaAt1024 H / 1024, sigmaAt1024 in [5, 15].
  FundusBlur,
};

// JSON / CLI names: "unevenIllumination", "underexposure", ..., "fundusBlur".
const char* toString(DegradationKind kind);
DegradationKind degradationKindFromString(const std::string& name);  // throws std::invalid_argument
const std::vector<DegradationKind>& allDegradationKinds();           // canonical order
const std::vector<DegradationKind>& radiographDegradationKinds();
const std::vector<DegradationKind>& fundusDegradationKinds();  // illumination, spots, blur

// degrade_eyeq.py's codes, read as a binary number whose bit 0 (rightmost) is illumination, bit 1 spots,
// bit 2 blur: "001" illumination, "010" spots, "100" blur, ..., "111" all three (the script's own mapping).
const std::vector<std::string>& fundusDegradationCodes();  // the 7 codes, "001" to "111" in numeric order
std::vector<DegradationKind> fundusCodeKinds(const std::string& code);  // throws std::invalid_argument

// --- Shapes: the severity-independent random part of a step (pixels refer to the image the step is for).

struct NoiseShape {        // Noise, Underexposure. Draws: one raw generator output.
  std::uint64_t seed = 0;  // seeds the CPU generator of the per-pixel standard-normal field [C, H, W]
};

struct DetectorLine {
  double position = 0.5;  // across the lines, as a fraction of the image width (vertical) or height
  bool bright = true;     // brighter (+) or darker (-) than its neighbours
};

// GridLines. Draws: axis u, period u, phase u, line count u, then position u and polarity u per line.
struct GridShape {
  bool vertical = true;                      // lines run top to bottom, so the pattern varies along x
  double periodPixels = 6;                   // [3, 10]
  double phaseRadians = 0;                   // [0, 2 pi)
  std::vector<DetectorLine> defectiveLines;  // 0 to 2 one-pixel lines
};

struct GainFieldShape {        // UnevenIllumination. Draws: angle u, curvature u
  double gradientRadians = 0;  // direction in which the gain rises, [0, 2 pi), y pointing down
  double curvature = 0;        // [-1, 1]; > 0 brighter centre, < 0 brighter rim
};

// FundusIllumination, in degrade_eyeq.py's order: colour (brightness, contrast, saturation with
// torchvision's semantics), halo (a bright ring added in a colour), hole (a dark soft disc). Draws, each one
// u: brightness, contrast, saturation, halo centre x, y, inner diameter, outer-diameter weight, colour,
// hole diameter, centre x, y, edge, depth base, depth per mean (14).
struct FundusIlluminationShape {
  double brightness = 1;  // factors at severity 1: [0.7, 1.2], [0.6, 1.4], [0.6, 1.4]
  double contrast = 1;
  double saturation = 1;
  double haloCentreX = 0, haloCentreY = 0;  // pixels; within 1/8 of the width/height from the centre
  double haloInnerDiameter = 0;             // min(H, W) * [0.75, 1]
  double haloOuterDiameter = 0;             // larger, see degrade.cpp
  double haloEdgeSigma = 0;                 // pixels: softness of both ring edges
  int haloColour = 1;                       // index into the script's colours (0, 1, 2); 1 or 2 are drawn
  double holeCentreX = 0, holeCentreY = 0;  // pixels; x in [W/4, 3W/4], y in [3H/8, 5H/8]
  double holeDiameter = 0;                  // W * [0.4, 0.7]
  double holeEdgeSigma = 0;                 // pixels
  // Depth at severity 1 = holeDepthBase + holeDepthPerMean * (mean of the field of view), or 0 where that
  // mean is at most 0.25 (the script leaves dark images alone). Drawn in [0.26, 0.262] and [0.05, 0.06].
  double holeDepthBase = 0, holeDepthPerMean = 0;
};

struct Spot {
  double centreX = 0, centreY = 0;  // pixels
  double radius = 0;                // pixels, H * [0.01, 0.05]; as in the script the disc drawn is radius / 2
  double edgeSigma = 0;             // pixels: softness of the disc's edge
};

struct SpotsShape {  // FundusSpots. Draws: count u, then radius u, centre x u, centre y u, edge u per spot
  std::vector<Spot> spots;  // 5 to 10
};

struct FundusBlurShape {    // FundusBlur. Draws: sigma u
  double sigmaAt1024 = 10;  // [5, 15] pixels at 1024 x 1024, scaled to the image height
};

// std::monostate for kinds without a random shape (Overexposure, Blur, LowResolution, JpegBlocks).
using DegradationShape = std::variant<std::monostate, NoiseShape, GridShape, GainFieldShape,
                                      FundusIlluminationShape, SpotsShape, FundusBlurShape>;

struct DegradationStep {
  DegradationKind kind = DegradationKind::Blur;
  double severity = 0;     // [0, 1]; 0 = identity
  DegradationShape shape;  // the alternative that goes with `kind`
};

// What was applied to one sample, in order.
struct DegradeParams {
  int imageHeight = 0;  // the image size the steps' pixel coordinates refer to
  int imageWidth = 0;
  std::string fundusCode;  // the code drawn ("" when the kinds were drawn one by one)
  std::vector<DegradationStep> steps;

  // {"imageHeight", "imageWidth", "fundusCode" (if any), "steps": [{"kind", "severity", and the concrete
  // parameters at that severity: sigmaPixels, gain, quality, spots, ...}]}, for logs and contact sheets.
  nlohmann::json toJson() const;
};
nlohmann::json toJson(const std::vector<DegradeParams>& batch);

// One step of `kind` at `severity` with its shape drawn from `rng` for H x W images (the shape draws only;
// no severity draw). Throws std::invalid_argument for a severity outside [0, 1] or a non-positive size.
DegradationStep drawDegradationStep(DegradationKind kind, double severity, int imageHeight, int imageWidth,
                                    std::mt19937_64& rng);

struct DegradationConfig {
  std::vector<DegradationKind> kinds = radiographDegradationKinds();  // may be drawn; no repeats
  int minKinds = 1;  // kinds composed per sample, uniform in [minKinds, maxKinds]; 0 allows clean samples
  int maxKinds = 2;
  // When not empty, each sample draws one of these codes (uniformly) and gets exactly its kinds; `kinds`,
  // minKinds and maxKinds are then unused.
  std::vector<std::string> fundusCodes;
  double severityMin = 0.25, severityMax = 1.0;  // each step's severity, uniform in [min, max]
  // Fundus kinds leave the dark background around the field of view as it was: pixels whose brightest
  // channel is at most this level (10/255, the black of a fundus camera's mask) keep their input value.
  double fundusBackgroundLevel = 10.0 / 255.0;

  // Throws std::invalid_argument naming the field for an out-of-range (or NaN) value.
  void validate() const;
  nlohmann::json toJson() const;  // every field, under its own name; kinds and codes as strings
  // Missing fields keep their defaults; unknown keys, wrong types and bad values throw naming the key.
  static DegradationConfig fromJson(const nlohmann::json& json);
};

// The radiograph kinds, one or two per sample, severity [0.25, 1] (the defaults).
DegradationConfig radiographDegradation();
// degrade_eyeq.py: one of the 7 codes per sample at the script's strength (severity 1).
DegradationConfig fundusDegradation();

class Degrader {
 public:
  explicit Degrader(DegradationConfig config);  // validates
  const DegradationConfig& config() const { return config_; }

  // images: floating-point [N, C, H, W] in [0, 1] on any device. Returns a new tensor of the same shape,
  // dtype and device; degraded samples are clamped to [0, 1], samples without a step of positive severity
  // come back exactly as they were. Throws std::invalid_argument (naming the field) for another rank, an
  // integer dtype, NaN pixels, or a channel count a drawn kind cannot handle.
  torch::Tensor operator()(const torch::Tensor& images, std::mt19937_64& rng) const;

  // The same in two steps, and for hand-made parameters: apply() checks that there is one DegradeParams per
  // sample, drawn for this image size, with severities in [0, 1], finite shape values and each step's shape
  // matching its kind. Steps may come in any order and repeat; samples are batched per kind on the device.
  std::vector<DegradeParams> drawParams(std::int64_t batchSize, int imageHeight, int imageWidth,
                                        std::mt19937_64& rng) const;
  torch::Tensor apply(const torch::Tensor& images, const std::vector<DegradeParams>& params) const;

  // One named kind at one severity for every sample, shapes drawn from `rng` (sweeps, tests, contact sheets).
  std::vector<DegradeParams> drawKind(DegradationKind kind, double severity, std::int64_t batchSize,
                                      int imageHeight, int imageWidth, std::mt19937_64& rng) const;
  torch::Tensor applyKind(const torch::Tensor& images, DegradationKind kind, double severity,
                          std::mt19937_64& rng) const;

 private:
  DegradationConfig config_;
};

}  // namespace comcl::training
