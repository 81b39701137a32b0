#include "comcl/imaging/ingest.h"

#include <array>
#include <boost/uuid/detail/sha1.hpp>
#include <cstdio>
#include <vector>

#include "comcl/imaging/mapped_file.h"
#include "comcl/imaging/quality.h"
#include "comcl/storage/cache_key.h"

namespace comcl::imaging {

namespace {

std::array<unsigned int, 5> sha1Words(const void* data, std::size_t size) {
  boost::uuids::detail::sha1 hasher;
  hasher.process_bytes(data, size);
  unsigned int digest[5];
  hasher.get_digest(digest);
  return {digest[0], digest[1], digest[2], digest[3], digest[4]};
}

// The digest as eight hex digits per 32-bit word, words joined by `separator`.
std::string hexWords(const std::array<unsigned int, 5>& words, const char* separator) {
  std::string hex;
  char group[9];
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::snprintf(group, sizeof group, "%08x", words[i]);
    if (i > 0)
      hex += separator;
    hex += group;
  }
  return hex;
}

std::string joinMissing(const std::vector<std::string>& missing) {
  std::string out;
  for (const auto& tag : missing) {
    if (!out.empty())
      out += "; ";
    out += "missing " + tag;
  }
  return out;
}

storage::InstanceRecord recordFor(const DecodeResult& decoded, const std::string& resourceId,
                                  const std::string& source) {
  const DicomMetadata& m = decoded.metadata;
  storage::InstanceRecord r;
  r.resourceId = resourceId;
  r.source = source;
  r.sopInstanceUid = m.sopInstanceUid;
  r.seriesInstanceUid = m.seriesInstanceUid;
  r.studyInstanceUid = m.studyInstanceUid;
  r.sopClassUid = m.sopClassUid;
  // Orthanc's ids of the parents, so that deleting a study or series in Orthanc finds its rows. Orthanc
  // stores an instance only with these UIDs, and treats a missing PatientID as empty.
  if (!m.studyInstanceUid.empty() && !m.seriesInstanceUid.empty()) {
    const std::string patient = m.patientId.value_or("");
    r.patientResourceId = orthancPatientId(patient);
    r.studyResourceId = orthancStudyId(patient, m.studyInstanceUid);
    r.seriesResourceId = orthancSeriesId(patient, m.studyInstanceUid, m.seriesInstanceUid);
  }
  r.patientKey = m.patientId;
  r.studyDate = m.studyDate;
  r.accessionNumber = m.accessionNumber;
  r.viewPosition = m.viewPosition;
  r.laterality = m.laterality;
  r.modality = m.modality;
  r.bodyPart = m.bodyPart;
  r.rows = m.rows;
  r.cols = m.cols;
  r.frames = m.frames;
  r.bitsStored = m.bitsStored;
  r.transferSyntaxUid = m.transferSyntaxUid;
  r.photometric = m.photometric;
  r.decodeState = toDecodeState(decoded.outcome);
  r.decodeReason = decoded.reason;
  r.metadataIssues = joinMissing(m.missing);
  return r;
}

}  // namespace

std::string orthancInstanceId(const std::string& patientId, const std::string& studyUid,
                              const std::string& seriesUid, const std::string& sopUid) {
  const std::string key = patientId + "|" + studyUid + "|" + seriesUid + "|" + sopUid;
  return hexWords(sha1Words(key.data(), key.size()), "-");
}

std::string orthancPatientId(const std::string& patientId) {
  return hexWords(sha1Words(patientId.data(), patientId.size()), "-");
}

std::string orthancStudyId(const std::string& patientId, const std::string& studyUid) {
  const std::string key = patientId + "|" + studyUid;
  return hexWords(sha1Words(key.data(), key.size()), "-");
}

std::string orthancSeriesId(const std::string& patientId, const std::string& studyUid,
                            const std::string& seriesUid) {
  const std::string key = patientId + "|" + studyUid + "|" + seriesUid;
  return hexWords(sha1Words(key.data(), key.size()), "-");
}

std::string sha1Hex(const void* data, std::size_t size) {
  return hexWords(sha1Words(data, size), "");
}

storage::DecodeState toDecodeState(DecodeOutcome outcome) {
  switch (outcome) {
    case DecodeOutcome::Decoded:
      return storage::DecodeState::Decoded;
    case DecodeOutcome::Skipped:
      return storage::DecodeState::Skipped;
    case DecodeOutcome::Unsupported:
      return storage::DecodeState::Unsupported;
    case DecodeOutcome::Failed:
      return storage::DecodeState::Failed;
  }
  return storage::DecodeState::Failed;
}

Ingestor::Ingestor(storage::Index& index, storage::ImageCache& cache, IngestOptions options)
    : index_(index), cache_(cache), options_(options) {}

IngestOutcome Ingestor::ingest(const void* data, std::size_t size, const std::string& source,
                               std::optional<std::string> resourceId) {
  DecodeOptions decodeOptions;
  decodeOptions.size = cache_.format().size;
  // A grey cache (radiographs) takes colour as luminance; a colour cache (fundus photographs) keeps it.
  decodeOptions.keepColour = cache_.format().channels == 3;
  decodeOptions.percentileClip = options_.percentileClip;
  decodeOptions.fallback = options_.fallback;
  const DecodeResult decoded = decodeBuffer(data, size, decodeOptions);
  const DicomMetadata& m = decoded.metadata;

  IngestOutcome outcome;
  if (resourceId) {
    outcome.resourceId = *resourceId;
  } else if (!m.studyInstanceUid.empty() && !m.seriesInstanceUid.empty() && !m.sopInstanceUid.empty()) {
    outcome.resourceId = orthancInstanceId(m.patientId.value_or(""), m.studyInstanceUid, m.seriesInstanceUid,
                                           m.sopInstanceUid);
  } else {
    outcome.resourceId = "sha1:" + sha1Hex(data, size);
  }
  outcome.state = toDecodeState(decoded.outcome);
  outcome.reason = decoded.reason;

  const std::uint64_t key = storage::cacheKey(outcome.resourceId);
  const std::lock_guard<std::mutex> idLock(idLocks_[key % idLocks_.size()]);
  const std::optional<storage::InstanceRecord> existing = index_.findInstance(outcome.resourceId);
  // Copies of one instance share its id (e.g. a JPEG 2000 and an uncompressed copy): a copy that decodes
  // replaces a record that did not, never the other way round.
  const bool upgrades = existing && existing->decodeState != storage::DecodeState::Decoded &&
                        decoded.outcome == DecodeOutcome::Decoded;
  if (existing && !options_.replaceExisting && !upgrades) {
    outcome.alreadyIndexed = true;
    outcome.instanceId = existing->id;
    return outcome;
  }
  outcome.replaced = existing.has_value();

  storage::InstanceRecord record = recordFor(decoded, outcome.resourceId, source);
  std::optional<QualityMetrics> quality;
  if (decoded.outcome == DecodeOutcome::Decoded) {
    const std::int64_t slot = index_.reserveCacheSlot();
    try {
      const std::vector<std::uint8_t> bytes =
          quantise(toChannels(decoded.image, cache_.format().channels), cache_.format().bitsPerSample);
      cache_.write(slot, key, bytes.data());
      cache_.flush();  // the pixels are durable before the row that refers to them commits
    } catch (...) {
      index_.releaseCacheSlot(slot);
      throw;
    }
    record.cacheSlot = slot;
    const Rect& c = decoded.report.content;
    record.contentX = c.x;
    record.contentY = c.y;
    record.contentWidth = c.width;
    record.contentHeight = c.height;
    quality = measureQuality(decoded.image, c);
  }

  std::optional<storage::QualityRecord> qualityRow;
  if (quality)
    qualityRow = qualityRecordOf(*quality, m.rows, m.cols, options_.quality);
  // Row and quality in one transaction: a crash never leaves a decoded row without its flag.
  outcome.instanceId = index_.putInstanceWithQuality(record, qualityRow);
  return outcome;
}

storage::QualityRecord qualityRecordOf(const QualityMetrics& metrics, int nativeRows, int nativeCols,
                                       const QualityThresholds& thresholds) {
  const QualityAssessment assessment = assessQuality(metrics, nativeRows, nativeCols, thresholds);
  storage::QualityRecord q;
  q.sharpness = metrics.sharpness;
  q.noise = metrics.noise;
  q.contrast = metrics.contrast;
  q.clipLow = metrics.clipLow;
  q.clipHigh = metrics.clipHigh;
  q.dynamicRange = metrics.dynamicRange;
  q.meanIntensity = metrics.meanIntensity;
  q.bodyClipLow = metrics.bodyClipLow;
  q.bodyClipHigh = metrics.bodyClipHigh;
  q.bodyMean = metrics.bodyMean;
  q.flag = toString(assessment.flag);
  for (const std::string& reason : assessment.reasons)
    q.reasons += (q.reasons.empty() ? "" : "; ") + reason;
  return q;
}

IngestOutcome Ingestor::ingestFile(const std::string& path) {
  const MappedFile file(path);
  if (!file.ok()) {
    IngestOutcome unreadable;
    unreadable.resourceId = "file:" + path;
    unreadable.reason = file.error();
    return unreadable;
  }
  return ingest(file.data(), file.size(), path);
}

}  // namespace comcl::imaging
