// A small archive in a real index and image cache for the training tests: patients with studies and views,
// images whose brightness follows a label (so a probe can learn it), optional labels. A colour archive
// (channels 3) holds fundus-like RGB images: red strongest, blue weakest, on a black surround.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "comcl/storage/cache_key.h"
#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "temp_dir.h"

namespace comcl::testing {

struct FixtureImage {
  std::string patient;          // "" = missing PatientID
  std::string study;            // StudyInstanceUID, "" = missing
  std::string view;             // "" = missing
  std::optional<double> label;  // instance label "finding" when set
};

class ArchiveFixture {
 public:
  explicit ArchiveFixture(int imageSize = 32, int channels = 1)
      : index_(std::make_unique<storage::Index>(dir_.file("index.sqlite"))),
        cache_(std::make_unique<storage::ImageCache>(dir_.file("index.images"),
                                                     storage::CacheFormat{imageSize, 8, channels})) {}

  // Adds one decoded image; brightness grows with the label (dark 0, bright 1, grades in between) plus
  // noise, and a soft disc whose position depends on the image number.
  std::string add(const FixtureImage& spec, const std::string& finding = "finding") {
    const int n = count_++;
    storage::InstanceRecord row;
    row.resourceId = "img-" + std::to_string(n);
    row.source = "fixture";
    row.sopInstanceUid = "1.2.3." + std::to_string(n);
    row.studyInstanceUid = spec.study;
    if (!spec.patient.empty())
      row.patientKey = spec.patient;
    if (!spec.view.empty())
      row.viewPosition = spec.view;
    row.decodeState = storage::DecodeState::Decoded;
    const int size = cache_->format().size;
    row.rows = row.cols = row.contentWidth = row.contentHeight = size;
    const std::int64_t slot = index_->reserveCacheSlot();
    std::vector<std::uint8_t> pixels(cache_->imageBytes());
    std::mt19937 rng(static_cast<unsigned>(n) * 7919u + 1u);
    std::normal_distribution<double> noise(0.0, 12.0);
    const double base = 60.0 + 40.0 * spec.label.value_or(0.5);
    const double cx = size * (0.3 + 0.4 * ((n * 37) % 11) / 10.0),
                 cy = size * (0.3 + 0.4 * ((n * 53) % 7) / 6.0);
    const int channels = cache_->format().channels;
    static constexpr double kFundusTint[3] = {1.0, 0.55, 0.25};
    for (int y = 0; y < size; ++y) {
      for (int x = 0; x < size; ++x) {
        const double d2 = ((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (size * size * 0.02);
        const double v = base + 80.0 * std::exp(-d2) + noise(rng);
        const double fromCentre = std::hypot(x - size / 2.0, y - size / 2.0) / (size / 2.0);
        for (int c = 0; c < channels; ++c) {
          const double sample = channels == 1 ? v : fromCentre > 0.95 ? 0.0 : v * kFundusTint[c];
          pixels[static_cast<std::size_t>((y * size + x) * channels + c)] =
              static_cast<std::uint8_t>(std::clamp(sample, 0.0, 255.0));
        }
      }
    }
    cache_->write(slot, storage::cacheKey(row.resourceId), pixels.data());
    cache_->flush();
    row.cacheSlot = slot;
    index_->upsertInstance(row);
    if (spec.label)
      index_->putLabels({{"instance", row.resourceId, finding, *spec.label, "fixture"}});
    return row.resourceId;
  }

  // `patients` patients with `studies` studies of a frontal (PA) and a lateral (LL) view each; the label
  // alternates by patient.
  void addPatients(int patients, int studies, bool labelled = true) {
    for (int p = 0; p < patients; ++p) {
      for (int s = 0; s < studies; ++s) {
        for (const char* view : {"PA", "LL"}) {
          FixtureImage image{"P" + std::to_string(p), "S" + std::to_string(p) + "." + std::to_string(s), view,
                             std::nullopt};
          if (labelled)
            image.label = p % 2;
          add(image);
        }
      }
    }
  }

  storage::Index& index() { return *index_; }
  storage::ImageCache& cache() { return *cache_; }
  TempDir& dir() { return dir_; }

 private:
  TempDir dir_;
  std::unique_ptr<storage::Index> index_;
  std::unique_ptr<storage::ImageCache> cache_;
  int count_ = 0;
};

}  // namespace comcl::testing
