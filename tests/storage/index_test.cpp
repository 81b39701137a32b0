#include "comcl/storage/index.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.h"

namespace comcl::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;

const char* const kIsoUtc = "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z";

// A record with every field set to something distinct.
InstanceRecord fullRecord(const std::string& resourceId, std::int64_t slot = 17) {
  InstanceRecord r;
  r.resourceId = resourceId;
  r.source = "/data/" + resourceId + ".dcm";
  r.sopInstanceUid = "1.2.3.4." + resourceId;
  r.seriesInstanceUid = "1.2.3.4.5";
  r.studyInstanceUid = "1.2.3.4";
  r.sopClassUid = "1.2.840.10008.5.1.4.1.1.1.1";
  r.patientKey = "PAT-1";
  r.studyDate = "20240131";
  r.viewPosition = "PA";
  r.laterality = "L";
  r.modality = "DX";
  r.bodyPart = "CHEST";
  r.rows = 2048;
  r.cols = 2500;
  r.frames = 1;
  r.bitsStored = 12;
  r.transferSyntaxUid = "1.2.840.10008.1.2.1";
  r.photometric = "MONOCHROME2";
  r.decodeState = DecodeState::Decoded;
  r.decodeReason = "windowed from VOI LUT";
  r.metadataIssues = "missing BodyPartExamined";
  r.cacheSlot = slot;
  r.contentX = 1;
  r.contentY = 2;
  r.contentWidth = 250;
  r.contentHeight = 204;
  return r;
}

InstanceRecord record(const std::string& resourceId, const std::string& patient, const std::string& study,
                      const std::string& series, std::optional<std::int64_t> slot = std::nullopt) {
  InstanceRecord r;
  r.resourceId = resourceId;
  r.patientKey = patient;
  r.studyInstanceUid = study;
  r.seriesInstanceUid = series;
  r.decodeState = DecodeState::Decoded;
  r.cacheSlot = slot;
  return r;
}

void expectSameFields(const InstanceRecord& a, const InstanceRecord& b) {
  EXPECT_EQ(a.resourceId, b.resourceId);
  EXPECT_EQ(a.source, b.source);
  EXPECT_EQ(a.sopInstanceUid, b.sopInstanceUid);
  EXPECT_EQ(a.seriesInstanceUid, b.seriesInstanceUid);
  EXPECT_EQ(a.studyInstanceUid, b.studyInstanceUid);
  EXPECT_EQ(a.sopClassUid, b.sopClassUid);
  EXPECT_EQ(a.patientKey, b.patientKey);
  EXPECT_EQ(a.studyDate, b.studyDate);
  EXPECT_EQ(a.viewPosition, b.viewPosition);
  EXPECT_EQ(a.laterality, b.laterality);
  EXPECT_EQ(a.modality, b.modality);
  EXPECT_EQ(a.bodyPart, b.bodyPart);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_EQ(a.frames, b.frames);
  EXPECT_EQ(a.bitsStored, b.bitsStored);
  EXPECT_EQ(a.transferSyntaxUid, b.transferSyntaxUid);
  EXPECT_EQ(a.photometric, b.photometric);
  EXPECT_EQ(a.decodeState, b.decodeState);
  EXPECT_EQ(a.decodeReason, b.decodeReason);
  EXPECT_EQ(a.metadataIssues, b.metadataIssues);
  EXPECT_EQ(a.cacheSlot, b.cacheSlot);
  EXPECT_EQ(a.contentX, b.contentX);
  EXPECT_EQ(a.contentY, b.contentY);
  EXPECT_EQ(a.contentWidth, b.contentWidth);
  EXPECT_EQ(a.contentHeight, b.contentHeight);
}

std::vector<std::string> resourceIds(const std::vector<InstanceRecord>& records) {
  std::vector<std::string> ids;
  for (const auto& r : records) {
    ids.push_back(r.resourceId);
  }
  return ids;
}

class IndexTest : public ::testing::Test {
 protected:
  std::string path() const { return dir_.file("index.db"); }
  TempDir dir_;
};

// --- decode state names

TEST(DecodeStateNames, RoundTrip) {
  for (DecodeState s :
       {DecodeState::Decoded, DecodeState::Skipped, DecodeState::Unsupported, DecodeState::Failed}) {
    EXPECT_EQ(decodeStateFromString(toString(s)), s);
  }
  EXPECT_EQ(toString(DecodeState::Unsupported), "unsupported");
  EXPECT_THROW(decodeStateFromString("Decoded"), std::invalid_argument);
}

// --- instances

TEST_F(IndexTest, UpsertAndFindRoundTripEveryField) {
  Index index(path());
  const InstanceRecord in = fullRecord("abc");
  const std::int64_t id = index.upsertInstance(in);
  EXPECT_GT(id, 0);

  auto found = index.findInstance("abc");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->id, id);
  expectSameFields(*found, in);

  auto byId = index.instanceById(id);
  ASSERT_TRUE(byId);
  expectSameFields(*byId, in);

  EXPECT_FALSE(index.findInstance("missing"));
  EXPECT_FALSE(index.instanceById(id + 100));
}

TEST_F(IndexTest, EmptyOptionalsStayEmpty) {
  Index index(path());
  InstanceRecord in;
  in.resourceId = "sha1:0123";
  in.decodeState = DecodeState::Skipped;
  index.upsertInstance(in);
  auto found = index.findInstance("sha1:0123");
  ASSERT_TRUE(found);
  expectSameFields(*found, in);
  EXPECT_EQ(found->patientKey, std::nullopt);
  EXPECT_EQ(found->cacheSlot, std::nullopt);
  EXPECT_EQ(found->viewPosition, std::nullopt);
}

TEST_F(IndexTest, RowsSurviveReopening) {
  const InstanceRecord in = fullRecord("abc");
  std::int64_t id = 0;
  {
    Index index(path());
    id = index.upsertInstance(in);
  }
  Index index(path());
  auto found = index.instanceById(id);
  ASSERT_TRUE(found);
  expectSameFields(*found, in);
}

TEST_F(IndexTest, UpsertReplacesByResourceIdAndKeepsTheRowId) {
  Index index(path());
  const std::int64_t id = index.upsertInstance(fullRecord("abc"));
  index.upsertInstance(fullRecord("other", 18));
  InstanceRecord changed;
  changed.resourceId = "abc";
  changed.decodeState = DecodeState::Failed;
  changed.decodeReason = "truncated pixel data";
  EXPECT_EQ(index.upsertInstance(changed), id);
  EXPECT_EQ(index.instanceCount(), 2);
  auto found = index.findInstance("abc");
  ASSERT_TRUE(found);
  expectSameFields(*found, changed);  // nothing of the old row is left
}

TEST_F(IndexTest, RejectsRecordsWithoutResourceIdOrWithNegativeSlot) {
  Index index(path());
  EXPECT_THROW(index.upsertInstance(InstanceRecord{}), std::invalid_argument);
  EXPECT_THROW(index.upsertInstance(record("a", "p", "s", "se", -1)), std::invalid_argument);
  EXPECT_EQ(index.instanceCount(), 0);
}

TEST_F(IndexTest, BatchUpsertReturnsIdsInOrderAndIsAllOrNothing) {
  Index index(path());
  const auto ids = index.upsertInstances(
      {record("a", "p1", "s1", "x1"), record("b", "p1", "s1", "x1"), record("a", "p2", "s2", "x2")});
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_EQ(ids[0], ids[2]);  // same resource later in the batch replaces the earlier one
  EXPECT_EQ(index.findInstance("a")->patientKey, "p2");
  EXPECT_EQ(index.instanceCount(), 2);

  // Two rows may not share a cache slot: the whole batch is refused.
  EXPECT_THROW(index.upsertInstances({record("c", "p", "s", "x", 5), record("d", "p", "s", "x", 5)}),
               DatabaseError);
  EXPECT_EQ(index.instanceCount(), 2);
  EXPECT_FALSE(index.findInstance("c"));
  EXPECT_TRUE(index.upsertInstances({}).empty());
}

TEST_F(IndexTest, InstancesOfPatientAndStudyInIdOrder) {
  Index index(path());
  index.upsertInstances({
      record("i1", "P1", "S1", "S1.1"), record("i2", "P2", "S2", "S2.1"), record("i3", "P1", "S3", "S3.1"),
      record("i4", "P1", "S1", "S1.2"),
      record("i5", "P10", "S10", "S10.1"),  // prefix of nothing: exact match only
  });
  InstanceRecord anonymous = record("i6", "", "S1", "S1.1");
  anonymous.patientKey.reset();
  index.upsertInstance(anonymous);

  EXPECT_THAT(resourceIds(index.instancesOfPatient("P1")), ElementsAre("i1", "i3", "i4"));
  EXPECT_THAT(resourceIds(index.instancesOfPatient("P2")), ElementsAre("i2"));
  EXPECT_TRUE(index.instancesOfPatient("P").empty());
  EXPECT_THAT(resourceIds(index.instancesOfStudy("S1")), ElementsAre("i1", "i4", "i6"));
  EXPECT_TRUE(index.instancesOfStudy("nope").empty());
  auto full = index.instancesOfStudy("S3");
  ASSERT_EQ(full.size(), 1u);
  expectSameFields(full[0], record("i3", "P1", "S3", "S3.1"));
}

TEST_F(IndexTest, RemoveDeletesTheRowItsQualityAndItsPredictions) {
  Index index(path());
  const std::int64_t id = index.upsertInstance(fullRecord("abc"));
  const std::int64_t keep = index.upsertInstance(fullRecord("keep", 18));
  index.putQuality({id, 1, 2, 0.3, 0, 0, 0.5, 0.5, std::string("good"), ""});
  index.putQuality({keep, 1, 2, 0.3, 0, 0, 0.5, 0.5, std::string("good"), ""});
  index.putPredictions({{id, 1, "Effusion", 0.7}, {keep, 1, "Effusion", 0.2}});

  EXPECT_TRUE(index.removeInstance("abc"));
  EXPECT_FALSE(index.removeInstance("abc"));
  EXPECT_FALSE(index.findInstance("abc"));
  EXPECT_FALSE(index.quality(id));
  EXPECT_TRUE(index.predictions(id).empty());
  EXPECT_TRUE(index.quality(keep));
  EXPECT_EQ(index.predictions(keep).size(), 1u);
  EXPECT_EQ(index.instanceCount(), 1);
}

// --- cache slots

TEST_F(IndexTest, ReservedSlotsAreDistinctAndStartAfterTheSlotsInUse) {
  Index index(path());
  index.upsertInstances({record("a", "p", "s", "x", 0), record("b", "p", "s", "x", 7)});
  const std::int64_t first = index.reserveCacheSlot();
  const std::int64_t second = index.reserveCacheSlot();
  EXPECT_EQ(first, 8);
  EXPECT_EQ(second, 9);
}

TEST_F(IndexTest, SlotOfARemovedRowIsReused) {
  Index index(path());
  const std::int64_t slot = index.reserveCacheSlot();
  index.upsertInstance(record("a", "p", "s", "x", slot));
  index.upsertInstance(record("b", "p", "s", "x", index.reserveCacheSlot()));
  ASSERT_TRUE(index.removeInstance("a"));
  EXPECT_EQ(index.reserveCacheSlot(), slot);
  EXPECT_NE(index.reserveCacheSlot(), slot);  // handed out once only
}

TEST_F(IndexTest, OldSlotOfAReplacedRowIsReused) {
  Index index(path());
  const std::int64_t oldSlot = index.reserveCacheSlot();
  const std::int64_t id = index.upsertInstance(record("a", "p", "s", "x", oldSlot));
  const std::int64_t newSlot = index.reserveCacheSlot();
  EXPECT_EQ(index.upsertInstance(record("a", "p", "s", "x", newSlot)), id);
  EXPECT_EQ(index.findInstance("a")->cacheSlot, newSlot);
  EXPECT_EQ(index.reserveCacheSlot(), oldSlot);
  // Upserting with the same slot frees nothing.
  index.upsertInstance(record("a", "p2", "s", "x", newSlot));
  EXPECT_EQ(index.reserveCacheSlot(), newSlot + 1);
}

TEST_F(IndexTest, FreedSlotsArePersistedAndLeaveTheFreeListWhenTaken) {
  std::int64_t freed = 0;
  {
    Index index(path());
    index.upsertInstance(record("a", "p", "s", "x", 0));
    index.upsertInstance(record("b", "p", "s", "x", 1));
    index.upsertInstance(record("c", "p", "s", "x", 2));
    index.removeInstance("b");
    freed = 1;
  }
  {
    Index index(path());
    const std::int64_t slot = index.reserveCacheSlot();
    EXPECT_EQ(slot, freed);
    index.upsertInstance(record("d", "p", "s", "x", slot));
  }
  Index index(path());
  EXPECT_EQ(index.reserveCacheSlot(), 3);  // slot 1 was taken by "d" and is no longer free
}

TEST_F(IndexTest, ReleasedSlotIsHandedOutAgainButASlotInUseCannotBeReleased) {
  Index index(path());
  const std::int64_t a = index.reserveCacheSlot();
  const std::int64_t b = index.reserveCacheSlot();
  index.releaseCacheSlot(a);
  EXPECT_EQ(index.reserveCacheSlot(), a);
  index.upsertInstance(record("x", "p", "s", "x", b));
  EXPECT_THROW(index.releaseCacheSlot(b), std::logic_error);
  EXPECT_THROW(index.releaseCacheSlot(-3), std::invalid_argument);
}

TEST_F(IndexTest, ConcurrentReservationsAreDistinct) {
  Index index(path());
  index.upsertInstance(record("a", "p", "s", "x", 3));
  index.upsertInstance(record("b", "p", "s", "x", 4));
  index.removeInstance("a");  // one freed slot in the mix
  constexpr int kThreads = 8;
  constexpr int kPerThread = 250;
  std::vector<std::vector<std::int64_t>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        got[static_cast<std::size_t>(t)].push_back(index.reserveCacheSlot());
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  std::set<std::int64_t> all;
  for (const auto& slots : got) {
    all.insert(slots.begin(), slots.end());
  }
  EXPECT_EQ(all.size(), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(all.count(4), 0u);  // in use
  EXPECT_EQ(all.count(3), 1u);  // freed, reused
}

TEST_F(IndexTest, ConcurrentUpsertsAndReadsAreSerialised) {
  Index index(path());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::string id = "t" + std::to_string(t) + "-" + std::to_string(i);
        index.upsertInstance(record(id, "P" + std::to_string(t), "S", "X", index.reserveCacheSlot()));
        EXPECT_TRUE(index.findInstance(id));
        index.instancesOfPatient("P0");
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  EXPECT_EQ(index.instanceCount(), kThreads * kPerThread);
  EXPECT_EQ(index.instancesOfPatient("P3").size(), static_cast<std::size_t>(kPerThread));
}

TEST_F(IndexTest, SetCacheSlotAttachesAndFrees) {
  Index index(path());
  const std::int64_t id = index.upsertInstance(record("a", "p", "s", "x"));
  const std::int64_t first = index.reserveCacheSlot();
  EXPECT_TRUE(index.setCacheSlot(id, first));
  EXPECT_EQ(index.instanceById(id)->cacheSlot, first);
  const std::int64_t second = index.reserveCacheSlot();
  EXPECT_TRUE(index.setCacheSlot(id, second));
  EXPECT_EQ(index.reserveCacheSlot(), first);
  EXPECT_TRUE(index.setCacheSlot(id, std::nullopt));
  EXPECT_EQ(index.instanceById(id)->cacheSlot, std::nullopt);
  EXPECT_EQ(index.reserveCacheSlot(), second);
  EXPECT_FALSE(index.setCacheSlot(id + 1, 1));
}

// --- summary

TEST_F(IndexTest, SummaryCountsAHandBuiltSet) {
  Index index(path());
  auto decoded = [](std::string id, std::optional<std::string> patient, std::string study, std::string series,
                    std::optional<std::string> view, std::optional<std::string> modality,
                    std::string issues) {
    InstanceRecord r;
    r.resourceId = std::move(id);
    r.patientKey = std::move(patient);
    r.studyInstanceUid = std::move(study);
    r.seriesInstanceUid = std::move(series);
    r.viewPosition = std::move(view);
    r.modality = std::move(modality);
    r.metadataIssues = std::move(issues);
    r.decodeState = DecodeState::Decoded;
    return r;
  };
  auto problem = [](std::string id, DecodeState state, std::string reason, std::string issues) {
    InstanceRecord r;
    r.resourceId = std::move(id);
    r.patientKey = "P9";  // not counted: not decoded
    r.studyInstanceUid = "S9";
    r.seriesInstanceUid = "X9";
    r.modality = "SR";
    r.decodeState = state;
    r.decodeReason = std::move(reason);
    r.metadataIssues = std::move(issues);
    return r;
  };
  index.upsertInstances({
      decoded("1", "P1", "S1", "X1", "PA", "CR", ""),
      decoded("2", "P1", "S1", "X2", "LL", "CR", ""),
      decoded("3", "P1", "S2", "X3", "PA", "DX", "missing BodyPartExamined"),
      decoded("4", "P2", "S3", "X4", std::nullopt, "DX", "missing ViewPosition; missing BodyPartExamined"),
      decoded("5", std::nullopt, "S4", "X5", "AP", std::nullopt, "missing PatientID; missing Modality"),
      problem("6", DecodeState::Skipped, "not an image (SR)", ""),
      problem("7", DecodeState::Skipped, "not an image (SR)", "missing PatientID"),
      problem("8", DecodeState::Unsupported, "JPEG 2000 without a codec", ""),
      problem("9", DecodeState::Failed, "truncated pixel data", "missing ViewPosition"),
  });

  const IndexSummary s = index.summary();
  EXPECT_EQ(s.files, 9);
  EXPECT_EQ(s.images, 5);
  EXPECT_EQ(s.patients, 2);  // P1, P2 (a missing key is not a patient)
  EXPECT_EQ(s.studies, 4);
  EXPECT_EQ(s.series, 5);
  EXPECT_EQ(s.byState, (std::map<std::string, std::int64_t>{
                           {"decoded", 5}, {"skipped", 2}, {"unsupported", 1}, {"failed", 1}}));
  EXPECT_EQ(s.views, (std::map<std::string, std::int64_t>{{"PA", 2}, {"LL", 1}, {"AP", 1}, {"", 1}}));
  EXPECT_EQ(s.modalities, (std::map<std::string, std::int64_t>{{"CR", 2}, {"DX", 2}, {"", 1}}));
  EXPECT_EQ(s.problemReasons,
            (std::map<std::string, std::int64_t>{
                {"not an image (SR)", 2}, {"JPEG 2000 without a codec", 1}, {"truncated pixel data", 1}}));
  EXPECT_EQ(s.metadataIssues, (std::map<std::string, std::int64_t>{{"missing BodyPartExamined", 2},
                                                                   {"missing ViewPosition", 2},
                                                                   {"missing PatientID", 2},
                                                                   {"missing Modality", 1}}));
}

TEST_F(IndexTest, SummaryOfAnEmptyIndex) {
  Index index(path());
  const IndexSummary s = index.summary();
  EXPECT_EQ(s.files, 0);
  EXPECT_EQ(s.images, 0);
  EXPECT_EQ(s.patients, 0);
  EXPECT_TRUE(s.byState.empty());
  EXPECT_TRUE(s.metadataIssues.empty());
}

// --- quality

TEST_F(IndexTest, QualityRoundTripAndReplace) {
  Index index(path());
  const std::int64_t id = index.upsertInstance(fullRecord("abc"));
  EXPECT_FALSE(index.quality(id));
  QualityRecord q{id, 120.5, 3.25, 0.21, 0.01, 0.002, 0.8, 0.45, std::string("usable"), "low contrast"};
  index.putQuality(q);
  auto got = index.quality(id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->instanceId, id);
  EXPECT_DOUBLE_EQ(got->sharpness, 120.5);
  EXPECT_DOUBLE_EQ(got->noise, 3.25);
  EXPECT_DOUBLE_EQ(got->contrast, 0.21);
  EXPECT_DOUBLE_EQ(got->clipLow, 0.01);
  EXPECT_DOUBLE_EQ(got->clipHigh, 0.002);
  EXPECT_DOUBLE_EQ(got->dynamicRange, 0.8);
  EXPECT_DOUBLE_EQ(got->meanIntensity, 0.45);
  EXPECT_EQ(got->flag, "usable");
  EXPECT_EQ(got->reasons, "low contrast");

  q.flag.reset();
  q.sharpness = 5;
  q.reasons = "";
  index.putQuality(q);
  got = index.quality(id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->flag, std::nullopt);
  EXPECT_DOUBLE_EQ(got->sharpness, 5);
  EXPECT_EQ(got->reasons, "");
}

TEST_F(IndexTest, QualityNeedsAnExistingInstanceAndAKnownFlag) {
  Index index(path());
  EXPECT_THROW(index.putQuality({999, 0, 0, 0, 0, 0, 0, 0, std::nullopt, ""}), DatabaseError);
  const std::int64_t id = index.upsertInstance(fullRecord("abc"));
  EXPECT_THROW(index.putQuality({id, 0, 0, 0, 0, 0, 0, 0, std::string("great"), ""}), DatabaseError);
}

// --- labels

TEST_F(IndexTest, LabelsRoundTripAndUpdateByScopeKeyFinding) {
  Index index(path());
  index.putLabels({{"study", "1.2.3", "Pleural Effusion", 1, "labels.csv"},
                   {"study", "1.2.3", "Cardiomegaly", -1, "labels.csv"},
                   {"study", "9.9", "Cardiomegaly", 0, "labels.csv"},
                   {"instance", "1.2.3", "Cardiomegaly", 1, "dr.x"}});
  index.putLabels({{"study", "1.2.3", "Cardiomegaly", 0, "review"}});

  const auto got = index.labels("study", "1.2.3");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].finding, "Cardiomegaly");  // by finding
  EXPECT_DOUBLE_EQ(got[0].value, 0);
  EXPECT_EQ(got[0].source, "review");
  EXPECT_EQ(got[0].scope, "study");
  EXPECT_EQ(got[0].key, "1.2.3");
  EXPECT_EQ(got[1].finding, "Pleural Effusion");
  EXPECT_DOUBLE_EQ(got[1].value, 1);
  EXPECT_EQ(index.labels("instance", "1.2.3").size(), 1u);
  EXPECT_TRUE(index.labels("study", "nope").empty());

  // All or nothing.
  EXPECT_THROW(index.putLabels({{"study", "new", "A", 1, ""}, {"study", "", "B", 1, ""}}),
               std::invalid_argument);
  EXPECT_TRUE(index.labels("study", "new").empty());
}

// --- predictions

TEST_F(IndexTest, PredictionsRoundTripPerModelVersion) {
  Index index(path());
  const std::int64_t id = index.upsertInstance(fullRecord("abc"));
  index.putPredictions({{id, 2, "Effusion", 0.25}, {id, 1, "Effusion", 0.5}, {id, 1, "Atelectasis", 0.125}});
  index.putPredictions({{id, 2, "Effusion", 0.75}});
  const auto got = index.predictions(id);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].modelVersion, 1);
  EXPECT_EQ(got[0].finding, "Atelectasis");
  EXPECT_DOUBLE_EQ(got[0].score, 0.125);
  EXPECT_EQ(got[1].finding, "Effusion");
  EXPECT_DOUBLE_EQ(got[1].score, 0.5);
  EXPECT_EQ(got[2].modelVersion, 2);
  EXPECT_DOUBLE_EQ(got[2].score, 0.75);
  EXPECT_EQ(got[2].instanceId, id);
  EXPECT_THROW(index.putPredictions({{id + 50, 1, "Effusion", 0.5}}), DatabaseError);
}

// --- splits

TEST_F(IndexTest, SplitsAreFixedOnceAssigned) {
  {
    Index index(path());
    EXPECT_EQ(index.splitOf("P1"), std::nullopt);
    index.assignSplit("P1", "train", 42);
    index.assignSplit("P2", "test", 42);
    EXPECT_EQ(index.splitOf("P1"), "train");
    EXPECT_NO_THROW(index.assignSplit("P1", "train", 7));  // same split again: no change
    EXPECT_THROW(index.assignSplit("P1", "val", 42), std::logic_error);
    EXPECT_THROW(index.assignSplit("P3", "dev", 42), std::invalid_argument);
    EXPECT_THROW(index.assignSplit("", "train", 42), std::invalid_argument);
  }
  Index index(path());
  EXPECT_EQ(index.splitOf("P1"), "train");
  EXPECT_THROW(index.assignSplit("P1", "test", 1), std::logic_error);
  EXPECT_EQ(index.splits(), (std::map<std::string, std::string>{{"P1", "train"}, {"P2", "test"}}));
  Statement seed =
      index.connection().prepare("SELECT seed, assigned_at FROM splits WHERE patient_key = 'P1'");
  ASSERT_TRUE(seed.step());
  EXPECT_EQ(seed.columnInt(0), 42);
  EXPECT_THAT(seed.columnText(1), ::testing::MatchesRegex(kIsoUtc));
}

TEST_F(IndexTest, BulkSplitAssignmentIsAllOrNothing) {
  Index index(path());
  index.assignSplit("P1", "train", 1);
  EXPECT_THROW(index.assignSplits({{"P2", "val"}, {"P1", "test"}}, 1), std::logic_error);
  EXPECT_EQ(index.splitOf("P2"), std::nullopt);
  index.assignSplits({{"P2", "val"}, {"P3", "test"}, {"P1", "train"}}, 1);
  EXPECT_EQ(index.splitOf("P2"), "val");
  EXPECT_EQ(index.splitOf("P3"), "test");
}

// --- model versions and training runs

TEST_F(IndexTest, ModelVersionsRoundTrip) {
  Index index(path());
  TrainingRunRecord run;
  run.state = "succeeded";
  const std::int64_t runId = index.insertTrainingRun(run);
  ModelVersionRecord m{2, runId, "moco-v2+medaug", "/var/lib/comcl/models/2", "candidate", R"({"auc":0.81})",
                       ""};
  index.putModelVersion(m);
  index.putModelVersion({1, std::nullopt, "moco-v2", "/m/1", "active", "{}", "2024-01-01T00:00:00.000Z"});

  auto got = index.modelVersion(2);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->version, 2);
  EXPECT_EQ(got->runId, runId);
  EXPECT_EQ(got->method, "moco-v2+medaug");
  EXPECT_EQ(got->path, "/var/lib/comcl/models/2");
  EXPECT_EQ(got->status, "candidate");
  EXPECT_EQ(got->metricsJson, R"({"auc":0.81})");
  EXPECT_THAT(got->createdAt, ::testing::MatchesRegex(kIsoUtc));
  const std::string created = got->createdAt;

  m.status = "active";
  index.putModelVersion(m);
  got = index.modelVersion(2);
  EXPECT_EQ(got->status, "active");
  EXPECT_EQ(got->createdAt, created);  // kept when not given

  const auto all = index.modelVersions();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].version, 1);
  EXPECT_EQ(all[0].runId, std::nullopt);
  EXPECT_EQ(all[0].createdAt, "2024-01-01T00:00:00.000Z");
  EXPECT_FALSE(index.modelVersion(3));
  EXPECT_THROW(index.putModelVersion({3, std::nullopt, "", "", "deployed", "{}", ""}), DatabaseError);
}

TEST_F(IndexTest, ActivatingAModelVersionRetiresThePreviousOneAndNamesTheNewOne) {
  Index index(path());
  for (int v : {1, 2, 3})
    index.putModelVersion({v, std::nullopt, "medaug", "v" + std::to_string(v), "candidate", "{}", ""});
  EXPECT_EQ(index.activateModelVersion(1), std::nullopt);
  EXPECT_EQ(index.value(kActiveModelVersionKey), "1");
  EXPECT_EQ(index.activateModelVersion(2), 1);
  EXPECT_EQ(index.modelVersion(1)->status, "retired");
  EXPECT_EQ(index.modelVersion(2)->status, "active");
  EXPECT_EQ(index.modelVersion(3)->status, "candidate");
  EXPECT_EQ(index.activateModelVersion(1), 2);  // rollback
  EXPECT_EQ(index.modelVersion(1)->status, "active");
  EXPECT_EQ(index.modelVersion(2)->status, "retired");
  EXPECT_EQ(index.activateModelVersion(1), 1);  // again: nothing changes
  EXPECT_EQ(index.modelVersion(1)->status, "active");
  EXPECT_THROW(index.activateModelVersion(9), DatabaseError);
  EXPECT_EQ(index.value(kActiveModelVersionKey), "1");  // the failed call changed nothing
  EXPECT_EQ(index.modelVersion(1)->status, "active");
}

TEST_F(IndexTest, TrainingRunsRoundTrip) {
  Index index(path());
  TrainingRunRecord run;
  run.jobId = "job-1";
  run.state = "running";
  run.requestJson = R"({"method":"comcl"})";
  const std::int64_t id = index.insertTrainingRun(run);
  auto got = index.trainingRun(id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->id, id);
  EXPECT_EQ(got->jobId, "job-1");
  EXPECT_EQ(got->state, "running");
  EXPECT_EQ(got->requestJson, R"({"method":"comcl"})");
  EXPECT_THAT(got->startedAt, ::testing::MatchesRegex(kIsoUtc));
  EXPECT_EQ(got->finishedAt, std::nullopt);
  EXPECT_EQ(got->modelVersion, std::nullopt);
  EXPECT_EQ(got->detailsJson, "{}");

  TrainingRunRecord done = *got;
  done.state = "failed";
  done.detailsJson = R"({"loss":[2.5,2.1]})";
  done.finishedAt = "2024-02-02T10:00:00.000Z";
  done.error = "out of memory";
  done.modelVersion = 3;
  index.updateTrainingRun(done);
  got = index.trainingRun(id);
  EXPECT_EQ(got->state, "failed");
  EXPECT_EQ(got->finishedAt, "2024-02-02T10:00:00.000Z");
  EXPECT_EQ(got->error, "out of memory");
  EXPECT_EQ(got->modelVersion, 3);
  EXPECT_EQ(got->detailsJson, R"({"loss":[2.5,2.1]})");
  EXPECT_EQ(got->startedAt, done.startedAt);

  const std::int64_t second = index.insertTrainingRun(run);
  const auto all = index.trainingRuns();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].id, id);
  EXPECT_EQ(all[1].id, second);

  done.id = 999;
  EXPECT_THROW(index.updateTrainingRun(done), DatabaseError);
  EXPECT_FALSE(index.trainingRun(999));
  run.state = "exploded";
  EXPECT_THROW(index.insertTrainingRun(run), DatabaseError);
}

// --- cursor and values

TEST_F(IndexTest, CursorAndValuesRoundTripAndPersist) {
  {
    Index index(path());
    EXPECT_EQ(index.cursor("changes"), std::nullopt);
    EXPECT_EQ(index.value("active_model"), std::nullopt);
    index.setCursor("changes", 10);
    index.setCursor("changes", 12);
    index.setValue("active_model", "3");
    index.setValue("empty", "");
  }
  Index index(path());
  EXPECT_EQ(index.cursor("changes"), 12);
  EXPECT_EQ(index.cursor("other"), std::nullopt);
  EXPECT_EQ(index.value("active_model"), "3");
  EXPECT_EQ(index.value("empty"), "");
}

TEST_F(IndexTest, TimestampsAreIsoUtc) {
  Index index(path());
  index.upsertInstance(fullRecord("abc"));
  Statement s = index.connection().prepare("SELECT created_at, updated_at FROM instances");
  ASSERT_TRUE(s.step());
  EXPECT_THAT(s.columnText(0), ::testing::MatchesRegex(kIsoUtc));
  EXPECT_THAT(s.columnText(1), ::testing::MatchesRegex(kIsoUtc));
}

}  // namespace
}  // namespace comcl::storage
