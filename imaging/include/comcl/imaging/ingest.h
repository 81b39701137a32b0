// One DICOM object into the index: decode, measure quality, write the normalised image to the cache,
// then record the instance row (pixels first, row second, so a crash never leaves a row pointing at a torn
// image). Used by `comcl index` for folders and by the Orthanc plugin for stored instances.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "comcl/imaging/decode.h"
#include "comcl/imaging/quality_flags.h"
#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"

namespace comcl::imaging {

// Orthanc's public id of an instance: SHA-1 of "PatientID|StudyInstanceUID|SeriesInstanceUID|SOPInstanceUID"
// as five dash-separated groups of eight hex digits, so offline and plugin indexes name images alike.
std::string orthancInstanceId(const std::string& patientId, const std::string& studyUid,
                              const std::string& seriesUid, const std::string& sopUid);
// The same for the parents: SHA-1 of "PatientID", "PatientID|StudyInstanceUID", "...|SeriesInstanceUID".
std::string orthancPatientId(const std::string& patientId);
std::string orthancStudyId(const std::string& patientId, const std::string& studyUid);
std::string orthancSeriesId(const std::string& patientId, const std::string& studyUid,
                            const std::string& seriesUid);
// Lower-case hex SHA-1 of bytes.
std::string sha1Hex(const void* data, std::size_t size);

struct IngestOptions {
  double percentileClip = 0.005;  // see DecodeOptions
  // false: an instance already indexed with the same id is left as is, unless only the new copy decodes
  bool replaceExisting = false;
  // Decodes what DCMTK cannot (JPEG 2000, ...); see DecodeOptions::fallback. Called from the thread that
  // calls ingest(), so it must be thread-safe when the ingestor is shared by threads.
  FallbackDecoder fallback;
  // Every decoded image gets a flag (good / usable / reject) and reasons from these thresholds.
  QualityThresholds quality;
};

// The quality row ingest writes for a decoded image: `metrics` (measureQuality on the cache image inside its
// content box), the flag and "; "-separated reasons from the thresholds and the native size. Shared with
// the PNG manifest import so that both paths store the same row.
storage::QualityRecord qualityRecordOf(const QualityMetrics& metrics, int nativeRows, int nativeCols,
                                       const QualityThresholds& thresholds);

struct IngestOutcome {
  std::string resourceId;
  storage::DecodeState state = storage::DecodeState::Failed;
  std::string reason;
  std::int64_t instanceId = 0;
  bool alreadyIndexed = false;  // left unchanged because replaceExisting was false
  bool replaced = false;        // an earlier row with this id was replaced
};

class Ingestor {
 public:
  // The cache format decides the normalised size, depth and channels (a grey cache stores colour images as
  // luminance, a colour cache stores grey images in all three channels). Index and cache must outlive the
  // ingestor.
  Ingestor(storage::Index& index, storage::ImageCache& cache, IngestOptions options = {});

  // Thread-safe: decoding runs in the calling thread; index and cache serialise their own writes.
  // `resourceId` is Orthanc's id when known; otherwise it is derived (orthancInstanceId, or "sha1:<file
  // hash>" when a UID is missing). Never throws for bad DICOM input; storage errors propagate.
  IngestOutcome ingest(const void* data, std::size_t size, const std::string& source,
                       std::optional<std::string> resourceId = std::nullopt);
  IngestOutcome ingestFile(const std::string& path);

 private:
  storage::Index& index_;
  storage::ImageCache& cache_;
  IngestOptions options_;
  // Deciding whether to keep or replace a row and writing it is one step per resource id: two copies of
  // an instance ingested at once must not both see "absent" and overwrite each other in arrival order.
  std::array<std::mutex, 64> idLocks_;
};

storage::DecodeState toDecodeState(DecodeOutcome outcome);

}  // namespace comcl::imaging
