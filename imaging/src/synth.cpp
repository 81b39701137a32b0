// Synthetic chest radiograph archive: procedural anatomy, controlled degradations, DICOM encodings.
//
// Everything random comes from our own generators (splitmix64 to derive seeds, xoshiro256** to draw, our own
// Box-Muller for normals) because std:: distributions differ between standard libraries. Every image draws
// from a seed derived from (seed, patient, study, view), so it does not depend on generation order or count.
#include "comcl/imaging/synth.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcrlerp.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpeg/djrploss.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <dcmtk/dcmjpls/djrparam.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "comcl/imaging/codecs.h"

namespace comcl::imaging {

namespace {

constexpr double kPi = 3.14159265358979323846;

// ---------------------------------------------------------------------------------------------------------
// Deterministic random numbers

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Order-sensitive hash of a few integers: seeds for independent streams.
std::uint64_t mixHash(std::initializer_list<std::uint64_t> parts) {
  std::uint64_t state = 0x6A09E667F3BCC908ULL;
  std::uint64_t h = 0;
  for (std::uint64_t part : parts) {
    state ^= part + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h = splitmix64(state);
  }
  return h;
}

// Stream tags, so that two uses of the same (seed, patient, ...) never share random numbers.
enum Tag : std::uint64_t {
  kTagPatient = 0x5041,
  kTagAnatomy,
  kTagStudy,
  kTagPositioning,
  kTagImage,
  kTagTexture,
  kTagVessels,
  kTagBackground,
  kTagLesionShape,
  kTagNoise,
  kTagUid,
  kTagLesionPlan,
};

class Rng {  // xoshiro256**
 public:
  explicit Rng(std::uint64_t seed) {
    for (auto& word : s_) {
      word = splitmix64(seed);
    }
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  int below(int n) { return static_cast<int>(next() % static_cast<std::uint64_t>(n)); }
  // Standard normal by Box-Muller; the second value of each pair is kept for the next call.
  double normal() {
    if (hasSpare_) {
      hasSpare_ = false;
      return spare_;
    }
    const double u1 = 1.0 - uniform();  // (0, 1]: log() stays finite
    const double u2 = uniform();
    const double radius = std::sqrt(-2.0 * std::log(u1));
    spare_ = radius * std::sin(2.0 * kPi * u2);
    hasSpare_ = true;
    return radius * std::cos(2.0 * kPi * u2);
  }
  // A normal clipped to +-limit: keeps the anatomy within plausible bounds.
  double normal(double limit) { return std::clamp(normal(), -limit, limit); }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::array<std::uint64_t, 4> s_{};
  double spare_ = 0.0;
  bool hasSpare_ = false;
};

std::uint64_t hashString(const std::string& text) {  // FNV-1a
  std::uint64_t h = 0xCBF29CE484222325ULL;
  for (unsigned char c : text) {
    h = (h ^ c) * 0x100000001B3ULL;
  }
  return h;
}

std::uint64_t doubleBits(double value) {
  std::uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

// ---------------------------------------------------------------------------------------------------------
// Small numeric helpers

double clamp01(double x) {
  return std::clamp(x, 0.0, 1.0);
}

// Hermite step from e0 to e1; e0 > e1 gives a falling step.
double smoothstep(double e0, double e1, double x) {
  const double t = clamp01((x - e0) / (e1 - e0));
  return t * t * (3.0 - 2.0 * t);
}

// Path length through a solid cylinder at normalised distance d from its axis.
double tube(double d) {
  return d < 1.0 && d > -1.0 ? std::sqrt(1.0 - d * d) : 0.0;
}

// Path length through a bone (cortex around a less dense marrow): bright edges, as on real radiographs.
double boneTube(double d) {
  const double inner = 0.72;
  const double marrow = std::abs(d) < inner ? std::sqrt(inner * inner - d * d) : 0.0;
  return tube(d) - 0.6 * marrow;
}

// ---------------------------------------------------------------------------------------------------------
// Anatomy and positioning. Lengths are in units of the image height; x runs from the body's midline (image
// right positive), y from the top of the image down. Index 0 is the patient's right (image left on frontal
// views, as displayed conventionally for both PA and AP), 1 the patient's left.

enum class View { PA, AP, LL };

View parseView(const std::string& text) {
  if (text == "PA") {
    return View::PA;
  }
  if (text == "AP") {
    return View::AP;
  }
  if (text == "LL") {
    return View::LL;
  }
  throw std::invalid_argument("synth: unknown view '" + text + "' (expected PA, AP or LL)");
}

struct Anatomy {  // constant for a patient
  bool female = false;
  double lateralShift = 0;  // where the chest sits on a lateral detector
  double bodyHalfWidth = 0, shoulderY = 0, bodyDepth = 0, softDensity = 0, boneDensity = 0;
  double lungCenterX = 0, lungHalfWidth = 0, lungTop = 0, lungAir = 0;
  double diaphragm = 0, domeHeight = 0, rightDomeRaise = 0;
  double cardiothoracicRatio = 0, heartCenterY = 0, heartShiftX = 0, heartTilt = 0;
  double mediastinumHalfWidth = 0, spineHalfWidth = 0, vertebraPeriod = 0, vertebraPhase = 0, kyphosis = 0;
  double ribTop = 0, ribSpacing = 0, ribHalfThickness = 0;
  std::array<double, 12> ribJitter{};  // nobody's ribs are evenly spaced
  double clavicleY = 0, clavicleSlope = 0;
  std::uint64_t textureSeed = 0, vesselSeed = 0;
};

Anatomy makeAnatomy(std::uint64_t patientSeed) {
  Rng r(mixHash({patientSeed, kTagAnatomy}));
  Anatomy a;
  a.female = r.uniform() < 0.5;
  const double build = r.normal(2.0);  // habitus: wider, deeper, denser together
  a.bodyHalfWidth = 0.42 + 0.03 * build - (a.female ? 0.012 : 0.0);
  a.shoulderY = 0.10 + 0.012 * r.normal(2.0);
  a.bodyDepth = 0.58 + 0.03 * build + 0.02 * r.normal(2.0);
  a.lateralShift = 0.02 * r.normal(2.0);
  a.softDensity = 1.0 + 0.08 * build + 0.06 * r.normal(2.0);
  a.boneDensity = 1.0 + 0.08 * r.normal(2.0);
  a.lungCenterX = 0.205 + 0.010 * build + 0.007 * r.normal(2.0);
  a.lungHalfWidth = 0.160 + 0.008 * build + 0.007 * r.normal(2.0);
  a.lungTop = 0.100 + 0.012 * r.normal(2.0);
  a.lungAir = 1.0 + 0.06 * r.normal(2.0);
  a.diaphragm = 0.75 + 0.03 * r.normal(2.0);
  a.domeHeight = 0.075 + 0.012 * r.normal(2.0);
  a.rightDomeRaise = 0.022 + 0.008 * r.normal(2.0);
  a.cardiothoracicRatio = 0.46 + 0.035 * r.normal(2.5);
  a.heartCenterY = 0.0;  // derived from the diaphragm below
  a.heartShiftX = 0.045 + 0.010 * r.normal(2.0);
  a.heartTilt = 0.45 + 0.08 * r.normal(2.0);
  a.mediastinumHalfWidth = 0.060 + 0.006 * r.normal(2.0);
  a.spineHalfWidth = 0.036 + 0.003 * r.normal(2.0);
  a.vertebraPeriod = 0.047 + 0.003 * r.normal(2.0);
  a.vertebraPhase = r.uniform();
  a.kyphosis = 0.025 + 0.01 * r.normal(2.0);
  a.ribTop = 0.095 + 0.010 * r.normal(2.0);
  a.ribSpacing = 0.066 + 0.004 * r.normal(2.0);
  a.ribHalfThickness = 0.0115 + 0.0012 * r.normal(2.0);
  a.clavicleY = 0.165 + 0.014 * r.normal(2.0);
  a.clavicleSlope = -0.30 + 0.05 * r.normal(2.0);
  for (auto& jitter : a.ribJitter) {
    jitter = 0.004 * r.normal(2.0);
  }
  a.textureSeed = r.next();
  a.vesselSeed = r.next();
  return a;
}

struct Positioning {  // per study and view: how the patient stood, breathed and was exposed
  double dx = 0, dy = 0, angle = 0, scale = 1, inspiration = 0, gain = 1, offset = 0;
  std::uint64_t backgroundSeed = 0;
};

Positioning makePositioning(std::uint64_t studySeed, View view) {
  Rng r(mixHash({studySeed, kTagPositioning, view == View::LL ? 1ULL : 0ULL}));
  Positioning p;
  p.dx = 0.006 * r.normal(2.5);
  p.dy = 0.005 * r.normal(2.5);
  p.angle = 0.008 * r.normal(2.5);
  p.scale = 1.0 + 0.008 * r.normal(2.5);
  p.inspiration = 0.006 * r.normal(2.5);
  p.gain = 1.0 + 0.015 * r.normal(2.5);
  p.offset = 0.006 * r.normal(2.5);
  p.backgroundSeed = r.next();
  return p;
}

// Maps anatomy coordinates to image coordinates (x from the image centre, y from the top, units of height).
struct Transform {
  double dx, dy, c, s, scale;
  explicit Transform(const Positioning& p)
      : dx(p.dx), dy(p.dy), c(std::cos(p.angle)), s(std::sin(p.angle)), scale(p.scale) {}
  void toImage(double ax, double ay, double& x, double& y) const {
    const double u = ay - 0.5;
    x = scale * (c * ax - s * u) + dx;
    y = 0.5 + scale * (s * ax + c * u) + dy;
  }
  void toAnatomy(double x, double y, double& ax, double& ay) const {
    const double px = x - dx;
    const double py = y - 0.5 - dy;
    ax = (c * px + s * py) / scale;
    ay = 0.5 + (-s * px + c * py) / scale;
  }
};

// Egg-shaped superellipse (narrower at the apex); 1 inside, 0 outside, `edge` wide transition.
double lungShape(double ax, double ay, double cx, double cy, double rx, double ry, double edge) {
  const double dy = (ay - cy) / ry;
  if (dy <= -1.0 || dy >= 1.0) {
    return 0.0;
  }
  const double taper = 0.62 + 0.38 * clamp01((dy + 1.0) * 0.7);
  const double dx = (ax - cx) / (rx * taper);
  if (dx <= -1.05 || dx >= 1.05) {
    return 0.0;
  }
  const double r = std::pow(std::pow(std::abs(dx), 2.3) + std::pow(std::abs(dy), 2.3), 1.0 / 2.3);
  // Lungs are thickest (darkest) in the middle and thin out towards the pleura.
  return smoothstep(1.0, 1.0 - edge, r) * (0.8 + 0.2 * tube(r));
}

double ellipseRadius(double ax, double ay, double cx, double cy, double rx, double ry, double tilt) {
  if (tilt == 0.0) {  // most calls: skip the trigonometry
    const double u = (ax - cx) / rx;
    const double v = (ay - cy) / ry;
    return std::sqrt(u * u + v * v);
  }
  const double c = std::cos(tilt);
  const double s = std::sin(tilt);
  const double u = (ax - cx) * c + (ay - cy) * s;
  const double v = -(ax - cx) * s + (ay - cy) * c;
  return std::sqrt((u / rx) * (u / rx) + (v / ry) * (v / ry));
}

struct FrontalGeometry {
  bool ap = false;
  double lungCx[2] = {0, 0}, lungRx[2] = {0, 0}, lungCy = 0, lungRy = 0;
  double domeTop[2] = {0, 0}, domeBase = 0, domeHalf[2] = {0, 0}, domeCx[2] = {0, 0};
  double heartCx = 0, heartCy = 0, heartRx = 0, heartRy = 0, heartTilt = 0;
  double cageHalfWidth = 0, clavicleY = 0, clavicleSlope = 0, chestHalfWidth = 0, shoulderHalfWidth = 0;
};

FrontalGeometry frontalGeometry(const Anatomy& a, View view, const Positioning& p) {
  FrontalGeometry g;
  g.ap = view == View::AP;
  // AP: the patient is closer to the tube (magnified, wider), usually less inspired and the clavicles project
  // higher and flatter.
  const double widen = g.ap ? 1.04 : 1.0;
  g.domeBase = a.diaphragm + p.inspiration - (g.ap ? 0.03 : 0.0);
  const double bottom = g.domeBase + 0.03;
  g.lungCy = 0.5 * (a.lungTop + bottom);
  g.lungRy = 0.5 * (bottom - a.lungTop);
  for (int side = 0; side < 2; ++side) {
    const double sign = side == 0 ? -1.0 : 1.0;
    // The right lung is a little wider; the left makes room for the heart.
    g.lungRx[side] = a.lungHalfWidth * widen * (side == 0 ? 1.03 : 0.97);
    g.lungCx[side] = sign * a.lungCenterX * widen;
    g.domeHalf[side] = g.lungRx[side] * 1.2;
    g.domeCx[side] = g.lungCx[side] - sign * 0.02;
    g.domeTop[side] = g.domeBase - a.domeHeight - (side == 0 ? a.rightDomeRaise : 0.0);
  }
  g.cageHalfWidth = (a.lungCenterX + a.lungHalfWidth) * widen + 0.012;
  const double heartHalf = a.cardiothoracicRatio * g.cageHalfWidth * (g.ap ? 1.12 : 1.0);
  g.heartRx = heartHalf * 1.12;
  g.heartRy = heartHalf * 0.76 * (g.ap ? 1.05 : 1.0);
  g.heartCx = a.heartShiftX * widen;
  // The heart sits on the left hemidiaphragm.
  g.heartCy = g.domeTop[1] + 0.03 - 0.75 * g.heartRy;
  g.heartTilt = a.heartTilt;
  g.clavicleY = a.clavicleY - (g.ap ? 0.035 : 0.0);
  g.clavicleSlope = a.clavicleSlope * (g.ap ? 0.4 : 1.0);
  g.chestHalfWidth = a.bodyHalfWidth * widen;
  g.shoulderHalfWidth = g.chestHalfWidth + 0.12;
  return g;
}

double frontalDome(const FrontalGeometry& g, int side, double ax) {
  const double t = clamp01(std::abs(ax - g.domeCx[side]) / g.domeHalf[side]);
  return g.domeBase - (g.domeBase - g.domeTop[side]) * std::cos(0.5 * kPi * t);
}

struct LateralGeometry {
  double bodyCx = 0, lungCx = 0, lungRx = 0, lungCy = 0, lungRy = 0;
  double domeAnterior = 0, domePosterior = 0, domeHeight = 0;
  double heartCx = 0, heartCy = 0, heartRx = 0, heartRy = 0;
};

double lateralDome(const LateralGeometry& g, double ax, double shift) {
  const double t = clamp01((ax - (g.lungCx - g.lungRx)) / (2.0 * g.lungRx));
  const double base = g.domeAnterior + (g.domePosterior - g.domeAnterior) * std::pow(t, 1.4);
  return base - g.domeHeight * std::sin(kPi * clamp01(t * 1.1)) + shift * (0.5 + t);
}

LateralGeometry lateralGeometry(const Anatomy& a, const Positioning& p) {
  // Anterior is on the image left, the spine on the right.
  LateralGeometry g;
  g.bodyCx = 0.01 + a.lateralShift;
  g.lungRx = 0.5 * a.bodyDepth - 0.035;
  g.lungCx = g.bodyCx + 0.005;
  g.domeAnterior = a.diaphragm + p.inspiration - 0.07;
  g.domePosterior = a.diaphragm + p.inspiration + 0.06;
  g.domeHeight = a.domeHeight * 0.9;
  const double bottom = g.domePosterior + 0.03;
  g.lungCy = 0.5 * (a.lungTop - 0.01 + bottom);
  g.lungRy = 0.5 * (bottom - a.lungTop + 0.01);
  g.heartRx = 0.36 * a.cardiothoracicRatio;
  g.heartRy = 0.36 * a.cardiothoracicRatio;
  g.heartCx = g.lungCx - 0.40 * g.lungRx;
  g.heartCy = lateralDome(g, g.heartCx, 0.0) + 0.03 - 0.8 * g.heartRy;
  return g;
}

// ---------------------------------------------------------------------------------------------------------
// Attenuation of one point, frontal and lateral. Returns the line integral (0 = air); `lungOut` is how much
// lung lies under the point, for lung-only texture.

double frontalAttenuation(const Anatomy& a, const FrontalGeometry& g, double ax, double ay, double edge,
                          double& lungOut) {
  const int side = ax < 0.0 ? 0 : 1;
  const double sign = side == 0 ? -1.0 : 1.0;
  const double sx = sign * ax;  // distance from the midline, >= 0

  // Body envelope: neck, shoulders running out of the field, arms and chest wall below.
  const double neck = 0.11 * (g.ap ? 1.04 : 1.0);
  const double chest = g.chestHalfWidth * (1.0 + 0.03 * smoothstep(0.4, 0.85, ay));
  const double toShoulder = smoothstep(a.shoulderY - 0.10, a.shoulderY + 0.01, ay);
  const double fromShoulder = smoothstep(a.shoulderY + 0.04, a.shoulderY + 0.45, ay);
  const double halfWidth =
      neck + (g.shoulderHalfWidth - neck) * toShoulder + (chest - g.shoulderHalfWidth) * fromShoulder;
  const double tissue = tube(ax / halfWidth);
  double att = 0.05 + 1.3 * a.softDensity * std::pow(tissue, 0.7);

  // Diaphragm: below it liver, stomach and bowel, denser than the chest.
  const double domeR = frontalDome(g, 0, ax);
  const double domeL = frontalDome(g, 1, ax);
  const double dome = domeR + (domeL - domeR) * smoothstep(-0.06, 0.06, ax);
  const double abdomen = smoothstep(dome - edge, dome + 0.05, ay);
  att += 0.45 * abdomen * tissue;

  // Lung of this side, cut by its dome, the mediastinum and the heart.
  const double ownDome = frontalDome(g, side, ax);
  double lung = lungShape(ax, ay, g.lungCx[side], g.lungCy, g.lungRx[side], g.lungRy, 0.05) *
                smoothstep(ownDome + 0.5 * edge, ownDome - 1.5 * edge, ay);
  const double medHalf = a.mediastinumHalfWidth * (0.8 + 0.45 * smoothstep(0.1, 0.4, ay));
  const double med = smoothstep(medHalf + edge, medHalf - edge, std::abs(ax - 0.006));
  const double heartR = ellipseRadius(ax, ay, g.heartCx, g.heartCy, g.heartRx, g.heartRy, g.heartTilt);
  const double heartMask = smoothstep(1.0 + edge / g.heartRx, 1.0 - edge / g.heartRx, heartR);
  const double knobR = ellipseRadius(ax, ay, 0.055, g.heartCy - 0.25, 0.038, 0.034, 0.0);
  const double knob = smoothstep(1.05, 0.9, knobR);
  const double lungBeforeCuts = lung;
  lung *= (1.0 - med) * (1.0 - heartMask) * (1.0 - knob);
  lungOut = lung;
  att -= a.lungAir * lung;
  // Mediastinum and heart of about the same density, so that they merge into one silhouette.
  const double soft = std::max({0.5 * med, 0.55 * heartMask * (0.85 + 0.15 * tube(heartR)), 0.45 * knob});
  att += soft * (1.0 - abdomen);

  // Hila: pulmonary arteries and bronchi in a dense knot at each lung root.
  att += 0.2 * tube(ellipseRadius(sx, ay, medHalf + 0.03, g.lungCy + 0.0, 0.04, 0.065, 0.0));

  // Trachea and main bronchi: a dark air column in the midline.
  const double carina = g.heartCy - 0.21;
  const double tracheaX = 0.004 + 0.01 * ay;
  if (ay < carina) {
    att -= 0.38 * tube((ax - tracheaX) / 0.016) * smoothstep(0.0, 0.03, ay);
  } else if (ay < carina + 0.08) {
    const double t = (ay - carina) / 0.08;
    const double bx = 0.004 + 0.01 * carina + sign * t * 0.06;
    att -= 0.3 * tube((ax - bx) / 0.011) * (1.0 - t);
  }

  // Spine behind the mediastinum: faint vertebral bodies, disc spaces and pedicles.
  const double phase = std::fmod(ay / a.vertebraPeriod + a.vertebraPhase + 10.0, 1.0);
  const double disc = smoothstep(0.0, 0.05, phase) * smoothstep(0.18, 0.13, phase);
  double spine = tube(ax / a.spineHalfWidth) * (1.0 - 0.3 * disc);
  spine += 0.6 * boneTube(ellipseRadius(sx, phase * a.vertebraPeriod, 0.75 * a.spineHalfWidth,
                                        0.45 * a.vertebraPeriod, 0.009, 0.012, 0.0));
  att += 0.16 * a.boneDensity * spine;

  // Ribs: posterior arcs from the spine, curving down along the chest wall; anterior ribs fainter, sloping
  // down towards the sternum. They show mainly where lung lies behind them.
  const double behind = 0.3 + 0.7 * smoothstep(0.0, 0.5, lungBeforeCuts);
  const double reach = g.cageHalfWidth - 0.02;
  const double u = (sx - 0.03) / reach;
  if (tissue > 0.0 && u > -0.02 && u < 1.1) {
    double ribs = 0.0;
    for (int i = 0; i < 12; ++i) {
      const double th = a.ribHalfThickness * (1.0 + 0.03 * i);
      // Lower intercostal spaces are a little wider.
      const double yi =
          a.ribTop + a.ribSpacing * (i + 0.015 * i * i) + a.ribJitter[static_cast<std::size_t>(i)];
      const double yc = yi + reach * (-0.35 * u + 0.8 * u * u);
      if (std::abs(ay - yc) < 4.0 * th) {
        const double slope = -0.35 + 1.6 * u;
        const double d = (ay - yc) / (th * std::sqrt(1.0 + slope * slope));
        ribs += boneTube(d) * smoothstep(-0.02, 0.05, u) * smoothstep(1.08, 0.98, u);
      }
      if (u > 0.3) {
        const double ya = yi + reach * 0.45 + reach * 0.36 * (1.0 - u);
        const double ta = th * 1.3;
        if (std::abs(ay - ya) < 4.0 * ta) {
          const double d = (ay - ya) / (ta * std::sqrt(1.0 + 0.36 * 0.36));
          ribs += 0.4 * tube(d) * smoothstep(0.3, 0.45, u) * smoothstep(1.08, 0.98, u);
        }
      }
    }
    att +=
        0.30 * a.boneDensity * ribs * behind * (1.0 - 0.7 * abdomen) * smoothstep(1.0, 0.9, sx / halfWidth);
  }

  // Clavicles: S-shaped, from the sternal notch up and out to the shoulder.
  {
    const double len = 0.27;
    const double s = sx - 0.045;  // medial ends at the sternoclavicular joints, beside the midline
    if (s > -0.01 && s < len + 0.01) {
      const double yc = g.clavicleY + g.clavicleSlope * s + 0.012 * std::sin(2.0 * kPi * s / len);
      const double th = 0.013 * (1.0 + 0.35 * (1.0 - s / len));
      att += 0.6 * a.boneDensity * boneTube((ay - yc) / th) * smoothstep(-0.01, 0.01, s) *
             smoothstep(len + 0.01, len - 0.01, s);
    }
  }

  // Humeral heads at the shoulders, half out of the field.
  att += 0.7 * a.boneDensity *
         boneTube(ellipseRadius(sx, ay, chest + 0.075, a.shoulderY + 0.06, 0.06, 0.065, 0.0));

  // Stomach gas under the left dome.
  att -=
      0.25 * tube(ellipseRadius(ax, ay, g.domeCx[1] + 0.01, g.domeTop[1] + 0.05, 0.045, 0.02, 0.0)) * abdomen;

  // Breasts: soft-tissue density over the lower lung fields.
  if (a.female) {
    const double r = ellipseRadius(sx, ay, 0.24, g.domeBase - 0.07, 0.16, 0.11, 0.0);
    att += 0.2 * tube(r) * smoothstep(g.domeBase - 0.17, g.domeBase - 0.08, ay);
  }
  return att;
}

double lateralAttenuation(const Anatomy& a, const LateralGeometry& g, double ax, double ay, double edge,
                          double& lungOut) {
  // Body: a little shallower at the top, where it also sits more posteriorly.
  const double neckBlend = smoothstep(0.0, 0.22, ay);
  const double depth =
      a.bodyDepth * (0.8 + 0.2 * neckBlend) * (1.0 + 0.04 * std::sin(kPi * clamp01(ay / 0.9)));
  const double centre = g.bodyCx + 0.04 * (1.0 - neckBlend);
  const double anterior = centre - 0.5 * depth;
  const double posterior = centre + 0.5 * depth;
  const double tissue = tube((ax - centre) / (0.5 * depth));
  // The beam crosses the whole width of the chest, so soft tissue is denser than on a frontal view; the
  // shoulders and raised arms add more at the top.
  double att = 0.05 + 1.7 * a.softDensity * std::pow(tissue, 0.7);
  att += 0.6 * smoothstep(0.3, 0.06, ay) * tissue;

  const double dome = lateralDome(g, ax, 0.0);
  const double abdomen = smoothstep(dome - edge, dome + 0.05, ay);
  att += 0.35 * abdomen * tissue;

  // One lung field (both lungs superimposed), cut by the domes; the second hemidiaphragm shows as a fainter
  // contour just below the first.
  const double dome2 = lateralDome(g, ax, 0.02);
  double lung = lungShape(ax, ay, g.lungCx, g.lungCy, g.lungRx, g.lungRy, 0.05) *
                (0.65 * smoothstep(dome + 0.5 * edge, dome - 1.5 * edge, ay) +
                 0.35 * smoothstep(dome2 + 0.5 * edge, dome2 - 1.5 * edge, ay));
  const double heartR = ellipseRadius(ax, ay, g.heartCx, g.heartCy, g.heartRx, g.heartRy, -0.45);
  const double heartMask = smoothstep(1.08, 0.85, heartR);
  const double lungBeforeHeart = lung;
  lung *= 1.0 - 0.3 * heartMask;
  lungOut = lung;
  att -= 1.3 * a.lungAir * lung;
  att += 0.12 * heartMask * (1.0 - abdomen);

  // Hilum.
  att += 0.2 * tube(ellipseRadius(ax, ay, g.lungCx + 0.01, g.lungCy - 0.01, 0.05, 0.065, 0.0));

  // Trachea, sloping down and back to the carina.
  const double carina = g.lungCy - 0.06;
  if (ay < carina) {
    const double tx = centre - 0.06 + 0.12 * ay;
    att -= 0.3 * tube((ax - tx) / 0.016) * smoothstep(0.0, 0.04, ay) * smoothstep(carina, carina - 0.03, ay);
  }

  // Spine: vertebral bodies with end plates, posterior elements behind them, a gentle kyphosis.
  {
    const double xs = posterior - 0.12 - a.kyphosis * std::sin(kPi * ay);
    const double halfDepth = 0.037;
    const double u = (ax - xs) / halfDepth;
    const double phase = std::fmod(ay / a.vertebraPeriod + a.vertebraPhase + 10.0, 1.0);
    const double inBody = smoothstep(0.08, 0.13, phase) * smoothstep(1.0, 0.95, phase);
    const double plates =
        std::exp(-std::pow((phase - 0.13) / 0.025, 2.0)) + std::exp(-std::pow((phase - 0.95) / 0.025, 2.0));
    double spine = smoothstep(1.05, 0.9, std::abs(u)) * (0.3 + 0.5 * inBody + 0.3 * plates);
    // Pedicles and laminae, then spinous processes sloping down.
    spine += 0.3 * smoothstep(0.95, 1.15, u) * smoothstep(2.1, 1.8, u) * smoothstep(0.25, 0.35, phase) *
             smoothstep(0.75, 0.65, phase);
    const double spinous = (u - 2.2) / 1.0;
    spine += 0.25 * tube(ellipseRadius(spinous, phase - 0.1 * spinous, 0.5, 0.6, 0.55, 0.14, 0.3));
    att += 0.4 * a.boneDensity * spine;
  }

  // Sternum.
  if (ay > 0.14 && ay < 0.54) {
    att += 0.3 * a.boneDensity * boneTube((ax - anterior - 0.025) / 0.009) * smoothstep(0.14, 0.17, ay) *
           smoothstep(0.54, 0.5, ay);
  }

  // Ribs of both sides, slightly offset by different magnification, running down and forward.
  const double t = (posterior - ax) / depth;
  if (t > 0.03 && t < 0.9) {
    const double behind = (0.3 + 0.7 * smoothstep(0.0, 0.5, lungBeforeHeart)) * (1.0 - 0.7 * abdomen);
    double ribs = 0.0;
    for (int i = 0; i < 12; ++i) {
      for (int copy = 0; copy < 2; ++copy) {
        const double yc = a.ribTop + 0.02 + i * a.ribSpacing + copy * 0.016 + 0.16 * t + 0.10 * t * t;
        const double th = a.ribHalfThickness * (1.05 + 0.1 * copy);
        if (std::abs(ay - yc) < 3.0 * th) {
          ribs += boneTube((ay - yc) / (th * 1.06)) * smoothstep(0.03, 0.12, t) * smoothstep(0.9, 0.7, t);
        }
      }
    }
    att += 0.16 * a.boneDensity * ribs * behind;
  }
  return att;
}

// ---------------------------------------------------------------------------------------------------------
// Images and filters

void gaussianBlur(std::vector<float>& data, int width, int height, double sigma) {
  if (sigma <= 0.0) {
    return;
  }
  const int radius = std::max(1, static_cast<int>(std::ceil(3.0 * sigma)));
  std::vector<double> kernel(static_cast<std::size_t>(2 * radius + 1));
  double sum = 0.0;
  for (int i = -radius; i <= radius; ++i) {
    const double w = std::exp(-0.5 * (i * i) / (sigma * sigma));
    kernel[static_cast<std::size_t>(i + radius)] = w;
    sum += w;
  }
  for (auto& w : kernel) {
    w /= sum;
  }
  // One line at a time through a buffer padded with the edge values: no bounds checks in the inner loop.
  auto blurLine = [&](std::size_t start, std::size_t stride, int length, std::vector<double>& line) {
    line.resize(static_cast<std::size_t>(length + 2 * radius));
    for (int i = -radius; i < length + radius; ++i) {
      const int j = std::clamp(i, 0, length - 1);
      line[static_cast<std::size_t>(i + radius)] = data[start + static_cast<std::size_t>(j) * stride];
    }
    for (int i = 0; i < length; ++i) {
      const double* src = &line[static_cast<std::size_t>(i)];
      double acc = 0.0;
      for (std::size_t k = 0; k < kernel.size(); ++k) {
        acc += kernel[k] * src[k];
      }
      data[start + static_cast<std::size_t>(i) * stride] = static_cast<float>(acc);
    }
  };
  std::vector<double> line;
  const std::size_t w = static_cast<std::size_t>(width);
  for (int y = 0; y < height; ++y) {
    blurLine(static_cast<std::size_t>(y) * w, 1, width, line);
  }
  for (int x = 0; x < width; ++x) {
    blurLine(static_cast<std::size_t>(x), w, height, line);
  }
}

// Band-pass filtered white noise with unit standard deviation: texture at one scale.
std::vector<float> bandNoise(int width, int height, std::uint64_t seed, double sigmaFine,
                             double sigmaCoarse) {
  Rng rng(seed);
  const std::size_t n = static_cast<std::size_t>(width) * static_cast<std::size_t>(height);
  std::vector<float> fine(n);
  for (auto& v : fine) {
    v = static_cast<float>(rng.normal());
  }
  std::vector<float> coarse = fine;
  gaussianBlur(fine, width, height, sigmaFine);
  gaussianBlur(coarse, width, height, sigmaCoarse);
  double sumSq = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    fine[i] -= coarse[i];
    sumSq += static_cast<double>(fine[i]) * fine[i];
  }
  const double sd = std::sqrt(sumSq / static_cast<double>(std::max<std::size_t>(1, n)));
  if (sd > 0.0) {
    for (auto& v : fine) {
      v = static_cast<float>(v / sd);
    }
  }
  return fine;
}

double sampleBilinear(const std::vector<float>& data, int width, int height, double x, double y) {
  x = std::clamp(x, 0.0, width - 1.0);
  y = std::clamp(y, 0.0, height - 1.0);
  const int x0 = std::min(static_cast<int>(x), width - 1);
  const int y0 = std::min(static_cast<int>(y), height - 1);
  const int x1 = std::min(x0 + 1, width - 1);
  const int y1 = std::min(y0 + 1, height - 1);
  const double fx = x - x0;
  const double fy = y - y0;
  auto at = [&](int xx, int yy) {
    return static_cast<double>(
        data[static_cast<std::size_t>(yy) * static_cast<std::size_t>(width) + static_cast<std::size_t>(xx)]);
  };
  return (at(x0, y0) * (1 - fx) + at(x1, y0) * fx) * (1 - fy) +
         (at(x0, y1) * (1 - fx) + at(x1, y1) * fx) * fy;
}

// Pulmonary vessels: branching trees from the hila, drawn as soft lines into an image-sized buffer.
struct Segment {
  double x0, y0, x1, y1, halfWidth;
};

void growVessel(Rng& rng, std::vector<Segment>& out, double x, double y, double dirX, double dirY,
                double length, double halfWidth, int generation) {
  const double bend = 0.18 * rng.normal(2.0);
  const double c = std::cos(bend);
  const double s = std::sin(bend);
  const double nx = c * dirX - s * dirY;
  const double ny = s * dirX + c * dirY;
  const double x1 = x + nx * length;
  const double y1 = y + ny * length;
  out.push_back({x, y, x1, y1, halfWidth});
  if (generation >= 4) {
    return;
  }
  for (int child = 0; child < 2; ++child) {
    const double spread = (child == 0 ? -1.0 : 1.0) * rng.uniform(0.25, 0.55);
    const double cc = std::cos(spread);
    const double ss = std::sin(spread);
    growVessel(rng, out, x1, y1, cc * nx - ss * ny, ss * nx + cc * ny, length * rng.uniform(0.72, 0.86),
               halfWidth * 0.72, generation + 1);
  }
}

std::vector<Segment> vesselTrees(const Anatomy& a, View view, const FrontalGeometry& fg,
                                 const LateralGeometry& lg) {
  Rng rng(mixHash({a.vesselSeed, kTagVessels, view == View::LL ? 1ULL : 0ULL}));
  std::vector<Segment> segments;
  if (view == View::LL) {
    for (int i = 0; i < 8; ++i) {
      const double angle = 2.0 * kPi * (i + rng.uniform(0.0, 0.6)) / 8.0;
      growVessel(rng, segments, lg.lungCx - 0.01, lg.lungCy + 0.01, std::cos(angle), std::sin(angle), 0.07,
                 0.008, 0);
    }
    return segments;
  }
  for (int side = 0; side < 2; ++side) {
    const double sign = side == 0 ? -1.0 : 1.0;
    const double hx = sign * (a.mediastinumHalfWidth * 1.3 + 0.03);
    const double hy = fg.lungCy + 0.02;
    for (int i = 0; i < 6; ++i) {
      const double phi = -1.25 + 2.5 * (i + rng.uniform(0.2, 0.8)) / 6.0;  // negative points up
      growVessel(rng, segments, hx, hy, sign * std::cos(phi), std::sin(phi), 0.065, 0.008, 0);
    }
  }
  return segments;
}

void rasterVessels(const std::vector<Segment>& segments, const Transform& tf, int width, int height,
                   double gain, std::vector<float>& out) {
  const double h = height;
  for (const Segment& seg : segments) {
    double ix0 = 0, iy0 = 0, ix1 = 0, iy1 = 0;
    tf.toImage(seg.x0, seg.y0, ix0, iy0);
    tf.toImage(seg.x1, seg.y1, ix1, iy1);
    const double px0 = ix0 * h + 0.5 * width - 0.5;
    const double py0 = iy0 * h - 0.5;
    const double px1 = ix1 * h + 0.5 * width - 0.5;
    const double py1 = iy1 * h - 0.5;
    // Keep the line integral when a vessel is thinner than a pixel (a wide faint line instead of aliasing).
    const double trueWidth = seg.halfWidth * tf.scale * h;
    const double w = std::max(0.7, trueWidth);
    const double amp = gain * 0.32 * std::pow(seg.halfWidth / 0.008, 1.5) * (trueWidth / w);
    const int xmin = std::max(0, static_cast<int>(std::floor(std::min(px0, px1) - 3.0 * w)));
    const int xmax = std::min(width - 1, static_cast<int>(std::ceil(std::max(px0, px1) + 3.0 * w)));
    const int ymin = std::max(0, static_cast<int>(std::floor(std::min(py0, py1) - 3.0 * w)));
    const int ymax = std::min(height - 1, static_cast<int>(std::ceil(std::max(py0, py1) + 3.0 * w)));
    const double vx = px1 - px0;
    const double vy = py1 - py0;
    const double len2 = std::max(1e-12, vx * vx + vy * vy);
    for (int y = ymin; y <= ymax; ++y) {
      for (int x = xmin; x <= xmax; ++x) {
        const double t = std::clamp(((x - px0) * vx + (y - py0) * vy) / len2, 0.0, 1.0);
        const double ddx = x - (px0 + t * vx);
        const double ddy = y - (py0 + t * vy);
        const double value = amp * std::exp(-(ddx * ddx + ddy * ddy) / (w * w));
        float& cell =
            out[static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)];
        cell = std::max(cell, static_cast<float>(value));  // max, not sum: no blobs where branches meet
      }
    }
  }
}

struct LesionSpec {
  double x = 0, y = 0, radius = 0;  // pixels
  double phase1 = 0, phase2 = 0;
};

Image renderImpl(int width, int height, View view, const Anatomy& a, const Positioning& pos,
                 const LesionSpec* lesion) {
  if (width <= 0 || height <= 0) {
    throw std::invalid_argument("renderChest: width and height must be positive");
  }
  Image image(width, height);
  const double h = height;
  const Transform tf(pos);
  const FrontalGeometry fg = frontalGeometry(a, view, pos);
  const LateralGeometry lg = lateralGeometry(a, pos);
  const double pixel = 1.0 / (h * pos.scale);  // one pixel in anatomy units
  const double edge = std::max(0.004, 1.2 * pixel);

  std::vector<float> vessels(static_cast<std::size_t>(width) * static_cast<std::size_t>(height), 0.0f);
  rasterVessels(vesselTrees(a, view, fg, lg), tf, width, height, view == View::LL ? 0.6 : 1.0, vessels);

  // Texture lives in anatomy coordinates so that it moves with the patient between studies.
  const std::uint64_t textureSeed = mixHash({a.textureSeed, kTagTexture, view == View::LL ? 1ULL : 0ULL});
  const double fineSigma = std::max(0.6, 0.0016 * h);
  const std::vector<float> fine = bandNoise(width, height, textureSeed, fineSigma, 2.5 * fineSigma);
  // The coarser texture is made on a smaller grid (cheaper blurs) and interpolated.
  const int midFactor = std::clamp(static_cast<int>(0.006 * h / 0.8), 1, 4);
  const int midWidth = std::max(1, width / midFactor);
  const int midHeight = std::max(1, height / midFactor);
  const std::vector<float> mid =
      bandNoise(midWidth, midHeight, textureSeed + 1, 0.006 * h / midFactor, 0.016 * h / midFactor);

  // Smooth exposure variation (heel effect, scatter, processing).
  Rng bg(mixHash({pos.backgroundSeed, kTagBackground}));
  std::array<double, 9> waves{};
  for (int k = 0; k < 3; ++k) {
    const double angle = bg.uniform(0.0, 2.0 * kPi);
    const double freq = bg.uniform(0.3, 1.1);
    waves[static_cast<std::size_t>(3 * k)] = freq * std::cos(angle);
    waves[static_cast<std::size_t>(3 * k + 1)] = freq * std::sin(angle);
    waves[static_cast<std::size_t>(3 * k + 2)] = bg.uniform(0.0, 2.0 * kPi);
  }
  const double heel = bg.uniform(-0.03, 0.03);
  // cos(a + b) = cos a cos b - sin a sin b: the waves separate into per-column and per-row tables.
  std::vector<double> waveX(static_cast<std::size_t>(6 * width));
  std::vector<double> waveY(static_cast<std::size_t>(6 * height));
  for (int k = 0; k < 3; ++k) {
    const std::size_t b = static_cast<std::size_t>(3 * k);
    for (int x = 0; x < width; ++x) {
      const double angle = 2.0 * kPi * waves[b] * ((x + 0.5 - 0.5 * width) / h);
      waveX[static_cast<std::size_t>(6 * x + 2 * k)] = std::cos(angle);
      waveX[static_cast<std::size_t>(6 * x + 2 * k + 1)] = std::sin(angle);
    }
    for (int y = 0; y < height; ++y) {
      const double angle = 2.0 * kPi * waves[b + 1] * ((y + 0.5) / h) + waves[b + 2];
      waveY[static_cast<std::size_t>(6 * y + 2 * k)] = std::cos(angle);
      waveY[static_cast<std::size_t>(6 * y + 2 * k + 1)] = std::sin(angle);
    }
  }

  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const double ix = (x + 0.5 - 0.5 * width) / h;
      const double iy = (y + 0.5) / h;
      double ax = 0;
      double ay = 0;
      tf.toAnatomy(ix, iy, ax, ay);
      double lung = 0.0;
      double att = view == View::LL ? lateralAttenuation(a, lg, ax, ay, edge, lung)
                                    : frontalAttenuation(a, fg, ax, ay, edge, lung);
      const std::size_t i =
          static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x);
      const double gx = ax * h + 0.5 * width - 0.5;
      const double gy = ay * h - 0.5;
      const double fineT = sampleBilinear(fine, width, height, gx, gy);
      const double midT = sampleBilinear(mid, midWidth, midHeight, (gx + 0.5) / midFactor - 0.5,
                                         (gy + 0.5) / midFactor - 0.5);
      att += vessels[i] * lung + lung * (0.035 * midT + 0.012 * fineT) + 0.010 * fineT;
      if (lesion != nullptr) {
        const double dx = x + 0.5 - lesion->x;
        const double dy = y + 0.5 - lesion->y;
        if (std::abs(dx) < 1.6 * lesion->radius && std::abs(dy) < 1.6 * lesion->radius) {
          // Slightly lobulated outline, soft edge, a little denser in the middle.
          const double theta = std::atan2(dy, dx);
          const double outline = lesion->radius * (1.0 + 0.08 * std::sin(3.0 * theta + lesion->phase1) +
                                                   0.05 * std::sin(5.0 * theta + lesion->phase2));
          const double r = std::sqrt(dx * dx + dy * dy) / outline;
          att += 0.55 * smoothstep(1.25, 0.75, r) * (0.75 + 0.25 * tube(r));
        }
      }
      double v = 1.0 - std::exp(-std::max(0.0, att));
      double wave = 0.0;
      for (std::size_t k = 0; k < 3; ++k) {
        const double* cx = &waveX[static_cast<std::size_t>(6 * x) + 2 * k];
        const double* cy = &waveY[static_cast<std::size_t>(6 * y) + 2 * k];
        wave += cx[0] * cy[0] - cx[1] * cy[1];
      }
      v = pos.gain * v + pos.offset + 0.008 * wave + heel * (iy - 0.5);
      image.pixels[i] = static_cast<float>(clamp01(v));
    }
  }
  return image;
}

LesionSpec lesionSpec(int width, int height, double lx, double ly, double lr, std::uint64_t seed) {
  Rng r(mixHash({seed, kTagLesionShape}));
  LesionSpec spec;
  spec.x = lx * width;
  spec.y = ly * height;
  spec.radius = std::max(0.5, lr * height);
  spec.phase1 = r.uniform(0.0, 2.0 * kPi);
  spec.phase2 = r.uniform(0.0, 2.0 * kPi);
  return spec;
}

Image renderChestImpl(int width, int height, View view, bool lesion, double lesionX, double lesionY,
                      double lesionRadius, std::uint64_t patientSeed, std::uint64_t studySeed) {
  const Anatomy anatomy = makeAnatomy(patientSeed);
  const Positioning positioning = makePositioning(studySeed, view);
  if (!lesion) {
    return renderImpl(width, height, view, anatomy, positioning, nullptr);
  }
  const LesionSpec spec = lesionSpec(width, height, lesionX, lesionY, lesionRadius, patientSeed);
  return renderImpl(width, height, view, anatomy, positioning, &spec);
}

// ---------------------------------------------------------------------------------------------------------
// Degradations (on [0, 1] images)

double noiseSigma(double v, double base, double slope) {
  return base + slope * v;
}

// Detector noise every image has: dense (bright) regions got fewer photons and are noisier.
void addQuantumNoise(Image& image, Rng& rng) {
  for (auto& p : image.pixels) {
    p = static_cast<float>(clamp01(p + noiseSigma(p, 0.003, 0.004) * rng.normal()));
  }
}

Image downsample(const Image& in, int factor) {
  Image out(std::max(1, in.width / factor), std::max(1, in.height / factor));
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      double sum = 0.0;
      for (int yy = 0; yy < factor; ++yy) {
        for (int xx = 0; xx < factor; ++xx) {
          sum += in.at(std::min(in.width - 1, x * factor + xx), std::min(in.height - 1, y * factor + yy));
        }
      }
      out.at(x, y) = static_cast<float>(sum / (factor * factor));
    }
  }
  return out;
}

Image degrade(Image image, Degradation degradation, int size, Rng& rng) {
  switch (degradation) {
    case Degradation::None:
    case Degradation::JpegArtefacts:  // the lossy encoder makes the artefacts
      return image;
    case Degradation::Blur:
      gaussianBlur(image.pixels, image.width, image.height, std::max(1.0, 3.5 * size / 512.0));
      return image;
    case Degradation::Noise:
      for (auto& p : image.pixels) {
        p = static_cast<float>(clamp01(p + noiseSigma(p, 0.045, 0.045) * rng.normal()));
      }
      return image;
    // Exposure in the radiographic sense, on the presentation image (bright = dense = fewer photons).
    case Degradation::Underexposed:
      // Too little dose: a light, flat film with strong quantum mottle; the densest regions get no
      // photons at all and saturate at white.
      for (auto& p : image.pixels) {
        const double v = 0.42 + 0.62 * static_cast<double>(p);
        p = static_cast<float>(clamp01(v + noiseSigma(v, 0.02, 0.03) * rng.normal()));
      }
      return image;
    case Degradation::Overexposed:
      // Too much dose: a dark film whose detector saturates where attenuation is low; lungs and air
      // burn out to black and lose their detail.
      for (auto& p : image.pixels) {
        p = static_cast<float>(clamp01(1.6 * static_cast<double>(p) - 0.6));
      }
      return image;
    case Degradation::LowResolution:
      return downsample(image, 4);
  }
  return image;
}

// ---------------------------------------------------------------------------------------------------------
// Names, dates, UIDs

// 128-bit number to decimal, without __int128 (not ISO C++).
std::string toDecimal(std::uint64_t hi, std::uint64_t lo) {
  std::array<std::uint64_t, 4> limbs = {hi >> 32, hi & 0xFFFFFFFFULL, lo >> 32, lo & 0xFFFFFFFFULL};
  std::string digits;
  auto nonZero = [&limbs] { return limbs[0] != 0 || limbs[1] != 0 || limbs[2] != 0 || limbs[3] != 0; };
  do {
    std::uint64_t remainder = 0;
    for (auto& limb : limbs) {
      const std::uint64_t cur = (remainder << 32) | limb;
      limb = cur / 10;
      remainder = cur % 10;
    }
    digits.push_back(static_cast<char>('0' + remainder));
  } while (nonZero());
  std::reverse(digits.begin(), digits.end());
  return digits;
}

// "2.25." + a 128-bit number: the UUID-derived root needs no registration and is at most 44 characters.
std::string makeUid(std::initializer_list<std::uint64_t> parts) {
  const std::uint64_t hi = mixHash(parts);
  const std::uint64_t lo = mixHash({hi, kTagUid});
  return "2.25." + toDecimal(hi, lo);
}

struct Date {
  int year = 2000, month = 1, day = 1;
};

int daysInMonth(int year, int month) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : days[month - 1];
}

Date addDays(Date d, int days) {
  for (int i = 0; i < days; ++i) {
    if (++d.day > daysInMonth(d.year, d.month)) {
      d.day = 1;
      if (++d.month > 12) {
        d.month = 1;
        ++d.year;
      }
    }
  }
  return d;
}

std::string format(const char* fmt, int a, int b, int c) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, fmt, a, b, c);
  return buffer;
}

std::string dicomDate(const Date& d) {
  return format("%04d%02d%02d", d.year, d.month, d.day);
}

std::string formatDouble(const char* fmt, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, fmt, value);
  return buffer;
}

const char* const kFamilyNames[] = {"ALDER", "BIRCH",  "CEDAR",    "DOGWOOD", "ELM",   "FIR",  "GINKGO",
                                    "HAZEL", "IVY",    "JUNIPER",  "LARCH",   "MAPLE", "OAK",  "PINE",
                                    "ROWAN", "SPRUCE", "TAMARACK", "WILLOW",  "YEW",   "ASPEN"};
const char* const kFemaleNames[] = {"ANNA",  "BEA",   "CLARA", "DORA", "EVA",
                                    "FRIDA", "GRETA", "HANNA", "IDA",  "JULIA"};
const char* const kMaleNames[] = {"ADAM",  "BEN", "CARL", "DAVID", "EMIL",
                                  "FELIX", "GUS", "HUGO", "IVAN",  "JONAS"};

// ---------------------------------------------------------------------------------------------------------
// DICOM writing

// Encoders registered once per process; the static's destructor deregisters them at exit.
void ensureCodecs() {
  registerDicomEncoders();
}

void put(DcmDataset& ds, const DcmTagKey& tag, const std::string& value) {
  const OFCondition status = ds.putAndInsertString(DcmTag(tag), value.c_str());
  if (status.bad()) {
    throw std::runtime_error(std::string("synth: cannot set DICOM attribute: ") + status.text());
  }
}

void putUs(DcmDataset& ds, const DcmTagKey& tag, int value) {
  const OFCondition status = ds.putAndInsertUint16(DcmTag(tag), static_cast<Uint16>(value));
  if (status.bad()) {
    throw std::runtime_error(std::string("synth: cannot set DICOM attribute: ") + status.text());
  }
}

E_TransferSyntax transferSyntaxOf(Encoding encoding) {
  switch (encoding) {
    case Encoding::BigEndian:
      return EXS_BigEndianExplicit;
    case Encoding::Deflate:
      return EXS_DeflatedLittleEndianExplicit;
    case Encoding::JpegLossless:
      return EXS_JPEGProcess14SV1;
    case Encoding::JpegLsLossless:
      return EXS_JPEGLSLossless;
    case Encoding::Rle:
      return EXS_RLELossless;
    case Encoding::JpegBaseline:
      return EXS_JPEGProcess1;
    case Encoding::Mono2Uint16:
    case Encoding::Mono1Uint16:
    case Encoding::Mono2Uint8:
    case Encoding::Mono2Int16Rescale:
      break;
  }
  return EXS_LittleEndianExplicit;
}

bool isEightBit(Encoding encoding) {
  return encoding == Encoding::Mono2Uint8 || encoding == Encoding::JpegBaseline;
}

// A window around the body: percentiles of the pixels brighter than the air around the patient.
void bodyWindow(const std::vector<std::uint16_t>& values, int maxValue, int& centre, int& width) {
  std::vector<std::size_t> histogram(static_cast<std::size_t>(maxValue) + 1, 0);
  const int floor = maxValue / 8;
  std::size_t count = 0;
  for (std::uint16_t v : values) {
    if (v > floor) {
      ++histogram[v];
      ++count;
    }
  }
  if (count < 16) {
    centre = (maxValue + 1) / 2;
    width = maxValue + 1;
    return;
  }
  auto percentile = [&](double q) {
    const std::size_t target = static_cast<std::size_t>(q * static_cast<double>(count));
    std::size_t cumulative = 0;
    for (int v = 0; v <= maxValue; ++v) {
      cumulative += histogram[static_cast<std::size_t>(v)];
      if (cumulative > target) {
        return v;
      }
    }
    return maxValue;
  };
  const int lo = percentile(0.01);
  const int hi = percentile(0.995);
  centre = (lo + hi) / 2;
  width = std::max(64, (hi - lo) * 11 / 10);
}

struct PatientInfo {
  std::string id, name, sex, birthDate;
  bool dx = false;
  Date firstStudy;
  bool lesion = false;
  int lesionSide = 0;
  double lesionU = 0, lesionW = 0, lesionDepth = 0, lesionRadius = 0;
};

struct StudyInfo {
  Date date;
  std::string time, uid, accession;
  bool ap = false;
  double frontalAspect = 1.0;
  std::uint64_t seed = 0;
};

PatientInfo makePatient(const SynthOptions& o, int p, const Anatomy& anatomy) {
  Rng r(mixHash({o.seed, kTagPatient, static_cast<std::uint64_t>(p)}));
  PatientInfo info;
  char id[64];
  std::snprintf(id, sizeof id, "SYN%llu-%04d", static_cast<unsigned long long>(o.seed), p + 1);
  info.id = id;
  info.sex = anatomy.female ? "F" : "M";
  const auto& given = anatomy.female ? kFemaleNames : kMaleNames;
  info.name = std::string(kFamilyNames[r.below(20)]) + "^" + given[r.below(10)];
  info.dx = r.uniform() < 0.5;
  info.firstStudy = addDays(Date{2019, 1, 1}, r.below(1500));
  const int age = 25 + r.below(65);
  info.birthDate = dicomDate(addDays(Date{info.firstStudy.year - age - 1, 1, 1}, r.below(365)));
  info.lesion = r.uniform() < o.lesionFraction;
  info.lesionSide = r.below(2);
  info.lesionU = r.uniform(-0.1, 0.7);   // medial (-) to lateral (+) across the lung
  info.lesionW = r.uniform(-0.55, 0.3);  // upper (-) to lower (+)
  info.lesionDepth = r.uniform(-0.5, 0.5);
  info.lesionRadius = r.uniform(0.028, 0.05);
  return info;
}

StudyInfo makeStudy(const SynthOptions& o, int p, int s, Date date) {
  StudyInfo st;
  st.seed = mixHash({o.seed, kTagStudy, static_cast<std::uint64_t>(p), static_cast<std::uint64_t>(s)});
  Rng r(st.seed);
  st.date = date;
  st.time = format("%02d%02d%02d", 7 + r.below(12), r.below(60), r.below(60));
  st.accession = "ACC" + std::to_string(1000000000ULL + r.next() % 9000000000ULL);
  st.ap = r.uniform() < 0.3;
  st.frontalAspect = r.uniform(0.95, 1.1);
  return st;
}

// Where the patient's lesion lies on one image (fractions of width/height, radius of height).
void placeLesion(const PatientInfo& info, const Anatomy& a, View view, const Positioning& pos, int studyIndex,
                 double& fx, double& fy, double& fr, double aspect) {
  double ax = 0;
  double ay = 0;
  if (view == View::LL) {
    const LateralGeometry g = lateralGeometry(a, pos);
    ax = g.lungCx + info.lesionDepth * 0.5 * g.lungRx;
    ay = g.lungCy + info.lesionW * 0.5 * g.lungRy;
  } else {
    const FrontalGeometry g = frontalGeometry(a, view, pos);
    const int side = info.lesionSide;
    const double sign = side == 0 ? -1.0 : 1.0;
    ax = g.lungCx[side] + sign * info.lesionU * 0.5 * g.lungRx[side];
    ay = g.lungCy + info.lesionW * 0.5 * g.lungRy;
  }
  double x = 0;
  double y = 0;
  Transform(pos).toImage(ax, ay, x, y);
  // Round to what the manifest shows, so that the manifest describes the drawn lesion exactly.
  auto round4 = [](double v) { return std::round(v * 10000.0) / 10000.0; };
  fx = round4(x / aspect + 0.5);
  fy = round4(y);
  fr = round4(info.lesionRadius * pos.scale * (1.0 + 0.04 * studyIndex));  // slow growth over time
}

std::string relativePath(const std::string& patientId, int studyIndex, const std::string& view) {
  return patientId + "/" + std::to_string(studyIndex) + "_" + view + ".dcm";
}

struct Pixels {
  int width = 0, height = 0;
  std::vector<std::uint16_t> values;  // 0..4095 or 0..255
};

Pixels toPixels(const Image& image, int maxValue) {
  Pixels px;
  px.width = image.width;
  px.height = image.height;
  px.values.resize(image.pixels.size());
  for (std::size_t i = 0; i < image.pixels.size(); ++i) {
    px.values[i] = static_cast<std::uint16_t>(std::lround(clamp01(image.pixels[i]) * maxValue));
  }
  return px;
}

void writeDicom(const std::filesystem::path& path, const SynthImage& row, const PatientInfo& patient,
                const StudyInfo& study, const Pixels& px, Encoding encoding, int jpegQuality,
                int seriesNumber, double pixelSpacing) {
  auto file = std::make_unique<DcmFileFormat>();
  DcmDataset& ds = *file->getDataset();
  const bool dx = patient.dx;
  put(ds, DCM_SOPClassUID,
      dx ? UID_DigitalXRayImageStorageForPresentation : UID_ComputedRadiographyImageStorage);
  put(ds, DCM_SOPInstanceUID, row.sopInstanceUid);
  put(ds, DCM_StudyInstanceUID, row.studyInstanceUid);
  put(ds, DCM_SeriesInstanceUID, row.seriesInstanceUid);
  put(ds, DCM_PatientName, patient.name);
  put(ds, DCM_PatientID, patient.id);
  put(ds, DCM_PatientBirthDate, patient.birthDate);
  put(ds, DCM_PatientSex, patient.sex);
  const int age = study.date.year - std::stoi(patient.birthDate.substr(0, 4));
  put(ds, DCM_PatientAge, format("%03dY", age, 0, 0));
  put(ds, DCM_StudyDate, row.studyDate);
  put(ds, DCM_StudyTime, study.time);
  put(ds, DCM_SeriesDate, row.studyDate);
  put(ds, DCM_SeriesTime, study.time);
  put(ds, DCM_ContentDate, row.studyDate);
  put(ds, DCM_ContentTime, study.time);
  put(ds, DCM_AccessionNumber, study.accession);
  put(ds, DCM_StudyID, std::to_string(row.studyIndex + 1));
  put(ds, DCM_StudyDescription, "XR CHEST");
  put(ds, DCM_ReferringPhysicianName, "");
  put(ds, DCM_SeriesNumber, std::to_string(seriesNumber));
  put(ds, DCM_SeriesDescription, row.view == "LL" ? "CHEST LAT" : "CHEST " + row.view);
  put(ds, DCM_InstanceNumber, "1");
  put(ds, DCM_Modality, row.modality);
  put(ds, DCM_Manufacturer, "comcl synthetic");
  put(ds, DCM_InstitutionName, "COMCL SYNTHETIC ARCHIVE");
  put(ds, DCM_BodyPartExamined, "CHEST");
  put(ds, DCM_ViewPosition, row.view);
  // Chest is an unpaired body part; PA/AP displayed with the patient's right on the left, lateral facing
  // left.
  put(ds, DCM_ImageLaterality, "U");
  put(ds, DCM_PatientOrientation, row.view == "LL" ? "P\\F" : "L\\F");
  put(ds, DCM_ImageType, dx ? "DERIVED\\PRIMARY" : "ORIGINAL\\PRIMARY");
  if (dx) {
    put(ds, DCM_PresentationIntentType, "FOR PRESENTATION");
    put(ds, DCM_PixelIntensityRelationship, "LOG");
    put(ds, DCM_PixelIntensityRelationshipSign, encoding == Encoding::Mono1Uint16 ? "1" : "-1");
    put(ds, DCM_DetectorType, "SCINTILLATOR");
  }
  put(ds, DCM_BurnedInAnnotation, "NO");
  put(ds, DCM_KVP, row.view == "LL" ? "125" : (row.view == "AP" ? "90" : "120"));
  const std::string spacing = formatDouble("%.4f", pixelSpacing);
  put(ds, DCM_PixelSpacing, spacing + "\\" + spacing);
  put(ds, DCM_ImagerPixelSpacing, spacing + "\\" + spacing);

  putUs(ds, DCM_SamplesPerPixel, 1);
  putUs(ds, DCM_Rows, px.height);
  putUs(ds, DCM_Columns, px.width);
  const bool mono1 = encoding == Encoding::Mono1Uint16;
  put(ds, DCM_PhotometricInterpretation, mono1 ? "MONOCHROME1" : "MONOCHROME2");
  const std::size_t n = px.values.size();
  OFCondition status;
  if (isEightBit(encoding)) {
    putUs(ds, DCM_BitsAllocated, 8);
    putUs(ds, DCM_BitsStored, 8);
    putUs(ds, DCM_HighBit, 7);
    putUs(ds, DCM_PixelRepresentation, 0);
    std::vector<Uint8> bytes(n);
    for (std::size_t i = 0; i < n; ++i) {
      bytes[i] = static_cast<Uint8>(px.values[i]);
    }
    put(ds, DCM_RescaleIntercept, "0");
    put(ds, DCM_RescaleSlope, "1");
    put(ds, DCM_RescaleType, "US");
    status = ds.putAndInsertUint8Array(DCM_PixelData, bytes.data(), static_cast<unsigned long>(n));
  } else {
    putUs(ds, DCM_BitsAllocated, 16);
    putUs(ds, DCM_BitsStored, 12);
    putUs(ds, DCM_HighBit, 11);
    int centre = 0;
    int width = 0;
    bodyWindow(px.values, 4095, centre, width);
    std::vector<Uint16> words(n);
    if (encoding == Encoding::Mono2Int16Rescale) {
      // Signed stored values (-2048..2047) that only make sense after the modality LUT: 2 * s + 4096.
      putUs(ds, DCM_PixelRepresentation, 1);
      for (std::size_t i = 0; i < n; ++i) {
        words[i] = static_cast<Uint16>(static_cast<std::int16_t>(px.values[i] - 2048));
      }
      put(ds, DCM_RescaleIntercept, "4096");
      put(ds, DCM_RescaleSlope, "2");
      centre = 2 * centre;
      width = 2 * width;
    } else {
      putUs(ds, DCM_PixelRepresentation, 0);
      for (std::size_t i = 0; i < n; ++i) {
        words[i] = static_cast<Uint16>(mono1 ? 4095 - px.values[i] : px.values[i]);
      }
      put(ds, DCM_RescaleIntercept, "0");
      put(ds, DCM_RescaleSlope, "1");
      if (mono1) {
        centre = 4095 - centre;
      }
    }
    put(ds, DCM_RescaleType, "US");
    put(ds, DCM_WindowCenter, std::to_string(centre));
    put(ds, DCM_WindowWidth, std::to_string(width));
    status = ds.putAndInsertUint16Array(DCM_PixelData, words.data(), static_cast<unsigned long>(n));
  }
  if (status.bad()) {
    throw std::runtime_error("synth: cannot store pixel data for " + path.string() + ": " + status.text());
  }
  put(ds, DCM_LossyImageCompression, "00");

  const E_TransferSyntax xfer = transferSyntaxOf(encoding);
  std::unique_ptr<DcmRepresentationParameter> parameter;
  switch (encoding) {
    case Encoding::JpegLossless:
      parameter = std::make_unique<DJ_RPLossless>(1, 0);
      break;
    case Encoding::JpegLsLossless:
      parameter = std::make_unique<DJLSRepresentationParameter>(0, OFTrue);
      break;
    case Encoding::Rle:
      parameter = std::make_unique<DcmRLERepresentationParameter>();
      break;
    case Encoding::JpegBaseline:
      parameter = std::make_unique<DJ_RPLossy>(jpegQuality);
      break;
    default:
      break;
  }
  if (parameter) {
    ensureCodecs();
    status = ds.chooseRepresentation(xfer, parameter.get());
    if (status.bad() || !ds.canWriteXfer(xfer)) {
      throw std::runtime_error("synth: cannot encode " + path.string() + " as " +
                               DcmXfer(xfer).getXferName() + ": " + status.text());
    }
  }
  status = file->saveFile(path.string().c_str(), xfer, EET_ExplicitLength, EGL_recalcGL, EPD_noChange, 0, 0,
                          EWM_createNewMeta);
  if (status.bad()) {
    throw std::runtime_error("synth: cannot write " + path.string() + ": " + status.text());
  }
}

void createDirectories(const std::filesystem::path& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error || !std::filesystem::is_directory(dir)) {
    throw std::runtime_error("synth: cannot create directory " + dir.string() +
                             (error ? ": " + error.message() : std::string(": not a directory")));
  }
}

std::string csvNumber(double value) {
  return formatDouble("%.4f", value);
}

void writeManifests(const std::filesystem::path& dir, const std::vector<SynthImage>& rows) {
  const std::filesystem::path csvPath = dir / "manifest.csv";
  {
    std::ofstream csv(csvPath, std::ios::binary | std::ios::trunc);
    csv << "file,patientId,studyInstanceUid,seriesInstanceUid,sopInstanceUid,studyDate,studyIndex,view,"
           "lesion,"
           "lesionX,lesionY,lesionRadius,degradation,encoding,transferSyntaxUid,rows,cols,modality\n";
    for (const SynthImage& r : rows) {
      csv << r.file << ',' << r.patientId << ',' << r.studyInstanceUid << ',' << r.seriesInstanceUid << ','
          << r.sopInstanceUid << ',' << r.studyDate << ',' << r.studyIndex << ',' << r.view << ','
          << (r.lesion ? 1 : 0) << ',' << csvNumber(r.lesionX) << ',' << csvNumber(r.lesionY) << ','
          << csvNumber(r.lesionRadius) << ',' << toString(r.degradation) << ',' << toString(r.encoding) << ','
          << r.transferSyntaxUid << ',' << r.rows << ',' << r.cols << ',' << r.modality << '\n';
    }
    csv.flush();
    if (!csv) {
      throw std::runtime_error("synth: cannot write " + csvPath.string());
    }
  }
  const std::filesystem::path jsonPath = dir / "manifest.json";
  nlohmann::ordered_json array = nlohmann::ordered_json::array();
  for (const SynthImage& r : rows) {
    nlohmann::ordered_json o;
    o["file"] = r.file;
    o["patientId"] = r.patientId;
    o["studyInstanceUid"] = r.studyInstanceUid;
    o["seriesInstanceUid"] = r.seriesInstanceUid;
    o["sopInstanceUid"] = r.sopInstanceUid;
    o["studyDate"] = r.studyDate;
    o["studyIndex"] = r.studyIndex;
    o["view"] = r.view;
    o["lesion"] = r.lesion;
    o["lesionX"] = r.lesionX;
    o["lesionY"] = r.lesionY;
    o["lesionRadius"] = r.lesionRadius;
    o["degradation"] = toString(r.degradation);
    o["encoding"] = toString(r.encoding);
    o["transferSyntaxUid"] = r.transferSyntaxUid;
    o["rows"] = r.rows;
    o["cols"] = r.cols;
    o["modality"] = r.modality;
    array.push_back(std::move(o));
  }
  std::ofstream json(jsonPath, std::ios::binary | std::ios::trunc);
  json << array.dump(2) << '\n';
  json.flush();
  if (!json) {
    throw std::runtime_error("synth: cannot write " + jsonPath.string());
  }
}

void validate(const SynthOptions& o) {
  if (o.outputDir.empty()) {
    throw std::invalid_argument("synth: outputDir is empty");
  }
  if (o.patients < 0 || o.studiesPerPatient < 0) {
    throw std::invalid_argument("synth: patients and studiesPerPatient must not be negative");
  }
  if (o.size < 32 || o.size > 8192) {
    throw std::invalid_argument("synth: size must be within 32..8192");
  }
  if (!(o.lesionFraction >= 0.0 && o.lesionFraction <= 1.0) ||
      !(o.degradedFraction >= 0.0 && o.degradedFraction <= 1.0)) {
    throw std::invalid_argument("synth: lesionFraction and degradedFraction must be within [0, 1]");
  }
  if (o.encodings.empty()) {
    throw std::invalid_argument("synth: encodings is empty");
  }
  if (o.jpegArtefactsQuality < 1 || o.jpegArtefactsQuality > 100 || o.jpegBaselineQuality < 1 ||
      o.jpegBaselineQuality > 100) {
    throw std::invalid_argument("synth: JPEG quality factors must be within 1..100");
  }
}

}  // namespace

// -------------------------------------------------------------------------------------------------------------

const char* toString(Degradation degradation) {
  switch (degradation) {
    case Degradation::None:
      return "None";
    case Degradation::Blur:
      return "Blur";
    case Degradation::Noise:
      return "Noise";
    case Degradation::Underexposed:
      return "Underexposed";
    case Degradation::Overexposed:
      return "Overexposed";
    case Degradation::LowResolution:
      return "LowResolution";
    case Degradation::JpegArtefacts:
      return "JpegArtefacts";
  }
  return "None";
}

Degradation degradationFromString(const std::string& text) {
  for (Degradation d : {Degradation::None, Degradation::Blur, Degradation::Noise, Degradation::Underexposed,
                        Degradation::Overexposed, Degradation::LowResolution, Degradation::JpegArtefacts}) {
    if (text == toString(d)) {
      return d;
    }
  }
  throw std::invalid_argument("unknown degradation '" + text + "'");
}

const char* toString(Encoding encoding) {
  switch (encoding) {
    case Encoding::Mono2Uint16:
      return "Mono2Uint16";
    case Encoding::Mono1Uint16:
      return "Mono1Uint16";
    case Encoding::Mono2Uint8:
      return "Mono2Uint8";
    case Encoding::Mono2Int16Rescale:
      return "Mono2Int16Rescale";
    case Encoding::BigEndian:
      return "BigEndian";
    case Encoding::Deflate:
      return "Deflate";
    case Encoding::JpegLossless:
      return "JpegLossless";
    case Encoding::JpegLsLossless:
      return "JpegLsLossless";
    case Encoding::Rle:
      return "Rle";
    case Encoding::JpegBaseline:
      return "JpegBaseline";
  }
  return "Mono2Uint16";
}

Encoding encodingFromString(const std::string& text) {
  for (Encoding e :
       {Encoding::Mono2Uint16, Encoding::Mono1Uint16, Encoding::Mono2Uint8, Encoding::Mono2Int16Rescale,
        Encoding::BigEndian, Encoding::Deflate, Encoding::JpegLossless, Encoding::JpegLsLossless,
        Encoding::Rle, Encoding::JpegBaseline}) {
    if (text == toString(e)) {
      return e;
    }
  }
  throw std::invalid_argument("unknown encoding '" + text + "'");
}

Image renderChest(int width, int height, const std::string& view, bool lesion, double lesionX, double lesionY,
                  double lesionRadius, std::uint64_t seed) {
  return renderChest(width, height, view, lesion, lesionX, lesionY, lesionRadius, seed, seed);
}

Image renderChest(int width, int height, const std::string& view, bool lesion, double lesionX, double lesionY,
                  double lesionRadius, std::uint64_t patientSeed, std::uint64_t studySeed) {
  return renderChestImpl(width, height, parseView(view), lesion, lesionX, lesionY, lesionRadius, patientSeed,
                         studySeed);
}

std::vector<SynthImage> writeSyntheticArchive(const SynthOptions& options) {
  validate(options);
  const std::filesystem::path root(options.outputDir);
  createDirectories(root);

  // UIDs also depend on the options that change pixels, so two archives with different pixels never share a
  // SOP Instance UID; patient identity depends on the seed only.
  std::uint64_t pixelKey =
      mixHash({options.seed, static_cast<std::uint64_t>(options.size), doubleBits(options.lesionFraction),
               doubleBits(options.degradedFraction), static_cast<std::uint64_t>(options.jpegArtefactsQuality),
               static_cast<std::uint64_t>(options.jpegBaselineQuality)});
  for (Degradation d : options.degradations) {
    pixelKey = mixHash({pixelKey, hashString(toString(d))});
  }
  for (Encoding e : options.encodings) {
    pixelKey = mixHash({pixelKey, hashString(toString(e))});
  }

  std::vector<SynthImage> rows;
  for (int p = 0; p < options.patients; ++p) {
    const std::uint64_t pu = static_cast<std::uint64_t>(p);
    const std::uint64_t patientSeed = mixHash({options.seed, kTagAnatomy, pu});
    const Anatomy anatomy = makeAnatomy(patientSeed);
    const PatientInfo patient = makePatient(options, p, anatomy);
    const std::filesystem::path patientDir = root / patient.id;
    createDirectories(patientDir);
    Date date = patient.firstStudy;
    for (int s = 0; s < options.studiesPerPatient; ++s) {
      const std::uint64_t su = static_cast<std::uint64_t>(s);
      if (s > 0) {  // a few days to a few weeks after the previous study
        Rng gap(mixHash({options.seed, kTagStudy, pu, su, 1}));
        date = addDays(date, 3 + gap.below(40));
      }
      const StudyInfo study = makeStudy(options, p, s, date);
      const std::string studyUid = makeUid({pixelKey, kTagUid, pu, su});
      const int views = options.lateralViews ? 2 : 1;
      for (int v = 0; v < views; ++v) {
        const std::uint64_t vu = static_cast<std::uint64_t>(v);
        const View view = v == 1 ? View::LL : (study.ap ? View::AP : View::PA);
        const std::string viewName = view == View::LL ? "LL" : (view == View::AP ? "AP" : "PA");
        Rng imageRng(mixHash({options.seed, kTagImage, pu, su, vu}));
        const bool degraded = imageRng.uniform() < options.degradedFraction && !options.degradations.empty();
        const Degradation degradation =
            degraded ? options.degradations[static_cast<std::size_t>(
                           imageRng.below(static_cast<int>(options.degradations.size())))]
                     : Degradation::None;
        Encoding encoding = options.encodings[static_cast<std::size_t>(
            imageRng.below(static_cast<int>(options.encodings.size())))];
        if (degradation == Degradation::JpegArtefacts) {
          encoding = Encoding::JpegBaseline;
        }

        const int height = options.size;
        const double aspect = view == View::LL ? 0.85 : study.frontalAspect;
        const int width = std::max(4, 4 * static_cast<int>(std::lround(options.size * aspect / 4.0)));
        const Positioning pos = makePositioning(study.seed, view);

        SynthImage row;
        row.patientId = patient.id;
        row.studyInstanceUid = studyUid;
        row.seriesInstanceUid = makeUid({pixelKey, kTagUid, pu, su, vu, 1});
        row.sopInstanceUid = makeUid({pixelKey, kTagUid, pu, su, vu, 2});
        row.studyDate = dicomDate(study.date);
        row.studyIndex = s;
        row.view = viewName;
        row.lesion = patient.lesion;
        if (patient.lesion) {
          placeLesion(patient, anatomy, view, pos, s, row.lesionX, row.lesionY, row.lesionRadius,
                      static_cast<double>(width) / height);
        }
        row.degradation = degradation;
        row.encoding = encoding;
        row.transferSyntaxUid = DcmXfer(transferSyntaxOf(encoding)).getXferID();
        row.modality = patient.dx ? "DX" : "CR";
        row.file = relativePath(patient.id, s, viewName);

        Image image = renderChestImpl(width, height, view, row.lesion, row.lesionX, row.lesionY,
                                      row.lesionRadius, patientSeed, study.seed);
        Rng noiseRng(mixHash({options.seed, kTagNoise, pu, su, vu}));
        addQuantumNoise(image, noiseRng);
        image = degrade(std::move(image), degradation, options.size, noiseRng);
        const Pixels px = toPixels(image, isEightBit(encoding) ? 255 : 4095);
        row.rows = px.height;
        row.cols = px.width;
        // A 43 cm detector along the rows; stored pixels get larger when the matrix is smaller.
        const double spacing = 430.0 / px.height;
        const int quality = degradation == Degradation::JpegArtefacts ? options.jpegArtefactsQuality
                                                                      : options.jpegBaselineQuality;
        writeDicom(root / row.file, row, patient, study, px, encoding, quality, v + 1, spacing);
        rows.push_back(std::move(row));
      }
    }
  }
  writeManifests(root, rows);
  return rows;
}

}  // namespace comcl::imaging
