// Synthetic DICOM archive for tests and demos: chest-like CR/DX radiographs for N patients, several studies
// each over time, frontal (PA/AP) and lateral views, with or without a synthetic lesion, with controlled
// degradations, in several encodings. Deterministic from the seed (own random generator, same bytes on
// every platform). A ground-truth manifest (manifest.csv and manifest.json) lies beside the files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comcl/imaging/image.h"

namespace comcl::imaging {

// Exposure follows the radiographic convention: Underexposed (too little dose) is a light, noisy film whose
// densest parts saturate white; Overexposed (too much dose) is a dark film whose lungs burn out to black.
enum class Degradation { None, Blur, Noise, Underexposed, Overexposed, LowResolution, JpegArtefacts };
const char* toString(Degradation degradation);
Degradation degradationFromString(const std::string& text);  // throws std::invalid_argument

// How the pixels are stored in the file.
enum class Encoding {
  Mono2Uint16,        // 16-bit allocated, 12 stored, MONOCHROME2, explicit VR little endian
  Mono1Uint16,        // as above but MONOCHROME1 (inverted stored values)
  Mono2Uint8,         // 8-bit MONOCHROME2
  Mono2Int16Rescale,  // signed 16-bit with rescale slope/intercept (12 stored; slope 2, intercept 4096)
  BigEndian,          // 16-bit explicit VR big endian
  Deflate,            // deflated explicit VR little endian
  JpegLossless,       // JPEG lossless, first-order prediction (process 14 SV1)
  JpegLsLossless,
  Rle,
  JpegBaseline,  // 8-bit lossy JPEG (used for the JpegArtefacts degradation)
};
const char* toString(Encoding encoding);
Encoding encodingFromString(const std::string& text);  // throws std::invalid_argument

struct SynthOptions {
  std::string outputDir;
  int patients = 4;
  int studiesPerPatient = 3;      // studies over time, a few days apart
  int size = 512;                 // rows (cols follow the view's aspect)
  double lesionFraction = 0.3;    // probability that a patient has a lesion
  double degradedFraction = 0.3;  // probability that an image gets one of `degradations`
  std::vector<Degradation> degradations = {Degradation::Blur,          Degradation::Noise,
                                           Degradation::Underexposed,  Degradation::Overexposed,
                                           Degradation::LowResolution, Degradation::JpegArtefacts};
  std::vector<Encoding> encodings = {Encoding::Mono2Uint16, Encoding::Mono1Uint16, Encoding::Mono2Uint8,
                                     Encoding::JpegLossless, Encoding::Rle};
  bool lateralViews = true;  // each study also gets a lateral view
  std::uint64_t seed = 1;
  int jpegArtefactsQuality = 12;  // IJG quality factor of JpegArtefacts images (low: blocks and ringing)
  int jpegBaselineQuality = 90;   // IJG quality factor when JpegBaseline is drawn from `encodings`
};

struct SynthImage {  // one row of the ground-truth manifest
  std::string file;  // relative to outputDir
  std::string patientId;
  std::string studyInstanceUid;
  std::string seriesInstanceUid;
  std::string sopInstanceUid;
  std::string studyDate;  // YYYYMMDD
  int studyIndex = 0;     // 0-based order of the study in the patient's timeline
  std::string view;       // PA, AP or LL
  bool lesion = false;
  double lesionX = 0, lesionY = 0, lesionRadius = 0;  // fractions of width/height; radius of height (0: none)
  Degradation degradation = Degradation::None;
  Encoding encoding = Encoding::Mono2Uint16;
  std::string transferSyntaxUid;
  int rows = 0;
  int cols = 0;
  std::string modality;  // CR (CR Image Storage) or DX (DX Image Storage - For Presentation), per patient
};

// Writes the archive and its manifest; returns the manifest rows. Throws std::runtime_error on I/O errors
// (the message names the path) and std::invalid_argument on inconsistent options. Every image depends only on
// (seed, patient, study, view) and the pixel options, not on how many patients or studies are generated.
// Files: outputDir/<patientId>/<studyIndex>_<view>.dcm, plus outputDir/manifest.csv and manifest.json.
std::vector<SynthImage> writeSyntheticArchive(const SynthOptions& options);

// The noise-free chest-like image for one view, intensities in [0, 1] (bright = dense); exposed for tests.
// view: "PA", "AP" or "LL" (throws std::invalid_argument otherwise). lesionX/lesionY are fractions of the
// width/height, lesionRadius a fraction of the height; the lesion is drawn at exactly that place.
Image renderChest(int width, int height, const std::string& view, bool lesion, double lesionX, double lesionY,
                  double lesionRadius, std::uint64_t seed);
// The same with the patient's anatomy (constant over time) and the study's positioning (small shifts,
// rotation, magnification, inspiration, exposure) drawn from separate seeds; the overload above is
// renderChest(..., seed, seed).
Image renderChest(int width, int height, const std::string& view, bool lesion, double lesionX, double lesionY,
                  double lesionRadius, std::uint64_t patientSeed, std::uint64_t studySeed);

}  // namespace comcl::imaging
