// Schema version 2: Orthanc parent ids, quality inside the body, study annotations, removal under an
// Orthanc resource, counts for the plugin, and the v1 -> v2 migration.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "comcl/storage/index.h"
#include "comcl/storage/schema.h"
#include "temp_dir.h"

namespace comcl::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::TempDir;

const char* const kIsoUtc = "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z";

std::int64_t scalar(Connection& c, const std::string& sql) {
  Statement s = c.prepare(sql);
  s.step();
  return s.columnInt(0);
}

std::vector<std::string> resourceIds(const std::vector<InstanceRecord>& records) {
  std::vector<std::string> ids;
  for (const auto& r : records) {
    ids.push_back(r.resourceId);
  }
  return ids;
}

InstanceRecord orthancRecord(const std::string& patient, const std::string& study, const std::string& series,
                             const std::string& instance, std::optional<std::int64_t> slot = std::nullopt) {
  InstanceRecord r;
  r.resourceId = instance;
  r.source = "orthanc";
  r.patientResourceId = patient;
  r.studyResourceId = study;
  r.seriesResourceId = series;
  r.patientKey = "key-" + patient;
  r.studyInstanceUid = "uid-" + study;
  r.seriesInstanceUid = "uid-" + series;
  r.decodeState = DecodeState::Decoded;
  r.cacheSlot = slot;
  return r;
}

QualityRecord qualityOf(std::optional<std::string> flag, std::string reasons) {
  QualityRecord q;
  q.sharpness = 100;
  q.noise = 2;
  q.contrast = 0.2;
  q.dynamicRange = 0.7;
  q.meanIntensity = 0.5;
  q.flag = std::move(flag);
  q.reasons = std::move(reasons);
  return q;
}

StudyAnnotationRecord annotation(const std::string& study, const std::string& sr = "") {
  StudyAnnotationRecord a;
  a.studyResourceId = study;
  a.studyInstanceUid = "uid-" + study;
  a.fingerprint = "fp-" + study;
  a.modelVersion = 1;
  a.qualityFlag = "good";
  a.reportJson = R"({"study":")" + study + R"("})";
  a.srInstanceId = sr;
  return a;
}

class IndexV2Test : public ::testing::Test {
 protected:
  std::string path() const { return dir_.file("index.db"); }
  TempDir dir_;
};

// --- migration

TEST_F(IndexV2Test, MigratesAVersion1DatabaseKeepingItsRows) {
  {
    Connection c(path());
    EXPECT_EQ(migrate(c, 1), 0);
    ASSERT_EQ(schemaVersion(c), 1);
    c.execScript(
        "INSERT INTO instances (id, resource_id, source, study_instance_uid, patient_key, decode_state,"
        " decode_reason, cache_slot, content_width, created_at, updated_at) VALUES"
        " (1, 'old-a', '/data/a.dcm', '1.2.3', 'P1', 'decoded', 'ok', 4, 250, 'x', 'x'),"
        " (2, 'old-b', '/data/b.dcm', '1.2.3', 'P1', 'skipped', 'not an image (SR)', NULL, 0, 'x', 'x');"
        "INSERT INTO quality (instance_id, sharpness, noise, contrast, clip_low, clip_high, dynamic_range,"
        " mean_intensity, flag, reasons, updated_at) VALUES (1, 50, 3, 0.25, 0.125, 0.0625, 0.75, 0.5,"
        " 'usable', 'low contrast', 'x');"
        "INSERT INTO predictions (instance_id, model_version, finding, score, created_at)"
        " VALUES (1, 1, 'Effusion', 0.5, 'x');"
        "INSERT INTO free_cache_slots (slot, freed_at) VALUES (2, 'x');");
  }

  Index index(path());
  EXPECT_EQ(schemaVersion(index.connection()), currentSchemaVersion());
  EXPECT_GE(currentSchemaVersion(), 2);
  EXPECT_EQ(index.instanceCount(), 2);

  auto a = index.findInstance("old-a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->id, 1);
  EXPECT_EQ(a->source, "/data/a.dcm");
  EXPECT_EQ(a->studyInstanceUid, "1.2.3");
  EXPECT_EQ(a->patientKey, "P1");
  EXPECT_EQ(a->decodeState, DecodeState::Decoded);
  EXPECT_EQ(a->cacheSlot, 4);
  EXPECT_EQ(a->contentWidth, 250);
  EXPECT_EQ(a->patientResourceId, "");
  EXPECT_EQ(a->studyResourceId, "");
  EXPECT_EQ(a->seriesResourceId, "");
  EXPECT_EQ(index.findInstance("old-b")->decodeState, DecodeState::Skipped);

  auto q = index.quality(1);
  ASSERT_TRUE(q);
  EXPECT_DOUBLE_EQ(q->sharpness, 50);
  EXPECT_DOUBLE_EQ(q->clipLow, 0.125);
  EXPECT_DOUBLE_EQ(q->clipHigh, 0.0625);
  EXPECT_EQ(q->flag, "usable");
  EXPECT_EQ(q->reasons, "low contrast");
  EXPECT_DOUBLE_EQ(q->bodyClipLow, 0);
  EXPECT_DOUBLE_EQ(q->bodyClipHigh, 0);
  EXPECT_DOUBLE_EQ(q->bodyMean, 0);
  EXPECT_EQ(index.predictions(1).size(), 1u);
  EXPECT_EQ(index.reserveCacheSlot(), 2);  // the persisted free list survives

  // The new columns and table are usable on the migrated rows.
  EXPECT_EQ(index.studyAnnotationCount(), 0);
  InstanceRecord updated = *a;
  updated.studyResourceId = "study-1";
  EXPECT_EQ(index.upsertInstance(updated), 1);
  EXPECT_THAT(resourceIds(index.instancesOfStudyResource("study-1")), ElementsAre("old-a"));
  EXPECT_EQ(index.decodeStateCounts(), (std::map<std::string, std::int64_t>{{"decoded", 1}, {"skipped", 1}}));
}

TEST_F(IndexV2Test, MigrationTargetIsBoundedAndNeverGoesBack) {
  Connection c(path());
  EXPECT_THROW(migrate(c, 0), std::invalid_argument);
  EXPECT_THROW(migrate(c, currentSchemaVersion() + 1), std::invalid_argument);
  EXPECT_EQ(schemaVersion(c), 0);
  EXPECT_EQ(migrate(c, 1), 0);
  EXPECT_EQ(migrate(c, 1), 1);  // already there
  EXPECT_EQ(migrate(c), 1);
  EXPECT_EQ(schemaVersion(c), currentSchemaVersion());
  EXPECT_EQ(migrate(c, 1), currentSchemaVersion());  // a newer database is left as it is
  EXPECT_EQ(schemaVersion(c), currentSchemaVersion());
  EXPECT_EQ(scalar(c, "SELECT COUNT(*) FROM schema_version"), currentSchemaVersion());
}

TEST(SchemaV2, LookupsByParentResourceStateAndReportUseIndexes) {
  Connection c(":memory:");
  migrate(c);
  const std::vector<std::string> queries = {
      "SELECT * FROM instances WHERE patient_resource_id = ? ORDER BY id",
      "SELECT * FROM instances WHERE study_resource_id = ? ORDER BY id",
      "SELECT * FROM instances WHERE series_resource_id = ? ORDER BY id",
      "SELECT decode_state, COUNT(*) FROM instances GROUP BY decode_state",
      "SELECT sr_instance_id FROM study_annotations WHERE sr_instance_id = ? ORDER BY sr_instance_id",
  };
  for (const std::string& query : queries) {
    Statement plan = c.prepare("EXPLAIN QUERY PLAN " + query);
    if (query.find('?') != std::string::npos) {
      plan.bind(1, "x");
    }
    std::string details;
    while (plan.step()) {
      details += plan.columnText(3) + "\n";
    }
    EXPECT_THAT(details, ::testing::HasSubstr("USING")) << query;
    EXPECT_THAT(details, ::testing::Not(::testing::HasSubstr("TEMP B-TREE"))) << query;
  }
}

TEST(SchemaV2, AnnotationConstraints) {
  Connection c(":memory:");
  migrate(c);
  EXPECT_THROW(c.execScript("INSERT INTO study_annotations (study_resource_id, fingerprint, quality_flag,"
                            " report_json, annotated_at) VALUES ('s', 'f', 'great', '{}', 'x')"),
               DatabaseError);
  EXPECT_THROW(c.execScript("INSERT INTO study_annotations (study_resource_id, fingerprint, report_json,"
                            " annotated_at) VALUES (NULL, 'f', '{}', 'x')"),
               DatabaseError);
  c.execScript(
      "INSERT INTO study_annotations (study_resource_id, fingerprint, report_json, annotated_at)"
      " VALUES ('s', 'f', '{}', 'x')");
  Statement s = c.prepare(
      "SELECT study_instance_uid, model_version, quality_flag, sr_instance_id"
      " FROM study_annotations");
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.columnText(0), "");
  EXPECT_TRUE(s.isNull(1));
  EXPECT_TRUE(s.isNull(2));
  EXPECT_EQ(s.columnText(3), "");
}

// --- parent ids

TEST_F(IndexV2Test, ParentResourceIdsRoundTrip) {
  Index index(path());
  const std::int64_t id = index.upsertInstance(orthancRecord("pat", "stu", "ser", "ins", 3));
  auto found = index.findInstance("ins");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->patientResourceId, "pat");
  EXPECT_EQ(found->studyResourceId, "stu");
  EXPECT_EQ(found->seriesResourceId, "ser");
  auto byId = index.instanceById(id);
  ASSERT_TRUE(byId);
  EXPECT_EQ(byId->patientResourceId, "pat");
  EXPECT_EQ(byId->studyResourceId, "stu");
  EXPECT_EQ(byId->seriesResourceId, "ser");
  EXPECT_EQ(index.instancesOfPatient("key-pat").at(0).seriesResourceId, "ser");

  // Replacing the row replaces the parent ids too (and keeps the row id).
  EXPECT_EQ(index.upsertInstance(orthancRecord("pat2", "stu2", "ser2", "ins", 3)), id);
  found = index.findInstance("ins");
  EXPECT_EQ(found->patientResourceId, "pat2");
  EXPECT_EQ(found->studyResourceId, "stu2");
  EXPECT_EQ(found->seriesResourceId, "ser2");

  // Batch upserts write them as well.
  index.upsertInstances({orthancRecord("p", "s", "x", "b1"), orthancRecord("p", "s", "y", "b2")});
  EXPECT_EQ(index.findInstance("b2")->seriesResourceId, "y");
}

TEST_F(IndexV2Test, InstancesOfStudyResourceInIdOrder) {
  Index index(path());
  index.upsertInstances({orthancRecord("p", "s1", "x1", "i1"), orthancRecord("p", "s2", "x2", "i2"),
                         orthancRecord("p", "s1", "x3", "i3"), orthancRecord("p", "s10", "x4", "i4")});
  index.upsertInstance(orthancRecord("p", "s1", "x1", "i0"));  // inserted last: highest id
  EXPECT_THAT(resourceIds(index.instancesOfStudyResource("s1")), ElementsAre("i1", "i3", "i0"));
  EXPECT_THAT(resourceIds(index.instancesOfStudyResource("s2")), ElementsAre("i2"));
  EXPECT_THAT(index.instancesOfStudyResource("s"), IsEmpty());
  EXPECT_THAT(index.instancesOfStudyResource("uid-s1"), IsEmpty());  // resource ids, not UIDs
}

// --- removal under an Orthanc resource

// 2 patients x 2 studies x 2 series x 2 instances, each with a cache slot, quality, predictions, and an
// annotation per study. Names: patient "p1", study "p1s2", series "p1s2x1", instance "p1s2x1i2".
class ResourceTreeTest : public IndexV2Test {
 protected:
  void SetUp() override {
    index_ = std::make_unique<Index>(path());
    for (const char* p : {"p1", "p2"}) {
      for (const char* s : {"s1", "s2"}) {
        const std::string study = std::string(p) + s;
        for (const char* x : {"x1", "x2"}) {
          const std::string series = study + x;
          for (const char* i : {"i1", "i2"}) {
            const std::string instance = series + i;
            const std::int64_t slot = index_->reserveCacheSlot();
            const std::int64_t id = index_->putInstanceWithQuality(
                orthancRecord(p, study, series, instance, slot), qualityOf(std::string("good"), ""));
            index_->putPredictions({{id, 1, "Effusion", 0.5}});
            ids_[instance] = id;
            slots_[instance] = slot;
          }
        }
        index_->putStudyAnnotation(annotation(study, "sr-" + study));
      }
    }
    ASSERT_EQ(index_->instanceCount(), 16);
    ASSERT_EQ(index_->studyAnnotationCount(), 4);
  }

  std::vector<std::string> instancesStartingWith(const std::string& prefix) const {
    std::vector<std::string> result;
    for (const auto& [name, id] : ids_) {
      if (name.rfind(prefix, 0) == 0) {
        result.push_back(name);
      }
    }
    std::sort(result.begin(), result.end(),
              [&](const std::string& a, const std::string& b) { return ids_.at(a) < ids_.at(b); });
    return result;
  }

  // Every instance row is present exactly when its name does not start with `removedPrefix`, and its
  // quality and predictions with it.
  void expectRemovedExactly(const std::string& removedPrefix) {
    for (const auto& [name, id] : ids_) {
      const bool removed = name.rfind(removedPrefix, 0) == 0;
      EXPECT_EQ(index_->findInstance(name).has_value(), !removed) << name;
      EXPECT_EQ(index_->quality(id).has_value(), !removed) << name;
      EXPECT_EQ(index_->predictions(id).size(), removed ? 0u : 1u) << name;
    }
  }

  // The slots of the removed rows are handed out again (lowest first), and then fresh ones.
  void expectSlotsReused(const std::vector<std::string>& removed) {
    std::vector<std::int64_t> expected;
    for (const std::string& name : removed) {
      expected.push_back(slots_.at(name));
    }
    std::sort(expected.begin(), expected.end());
    std::vector<std::int64_t> got;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      got.push_back(index_->reserveCacheSlot());
    }
    EXPECT_EQ(got, expected);
    EXPECT_EQ(index_->reserveCacheSlot(), 16);  // nothing else was freed
  }

  std::set<std::string> annotatedStudies() {
    std::set<std::string> studies;
    for (const char* s : {"p1s1", "p1s2", "p2s1", "p2s2"}) {
      if (index_->studyAnnotation(s)) {
        studies.insert(s);
      }
    }
    return studies;
  }

  std::unique_ptr<Index> index_;
  std::map<std::string, std::int64_t> ids_;
  std::map<std::string, std::int64_t> slots_;
};

TEST_F(ResourceTreeTest, CacheSlotsUnderEachLevelAreTheSlotsOfExactlyTheRowsBelow) {
  const auto slotsOf = [&](const std::string& prefix) {
    std::vector<std::int64_t> slots;
    for (const std::string& name : instancesStartingWith(prefix))
      slots.push_back(slots_.at(name));
    return slots;
  };
  EXPECT_EQ(index_->cacheSlotsUnder(ResourceLevel::Patient, "p2"), slotsOf("p2"));
  EXPECT_EQ(index_->cacheSlotsUnder(ResourceLevel::Study, "p1s2"), slotsOf("p1s2"));
  EXPECT_EQ(index_->cacheSlotsUnder(ResourceLevel::Series, "p2s1x2"), slotsOf("p2s1x2"));
  EXPECT_EQ(index_->cacheSlotsUnder(ResourceLevel::Instance, "p1s1x1i2"), slotsOf("p1s1x1i2"));
  EXPECT_THAT(index_->cacheSlotsUnder(ResourceLevel::Study, "p1"), IsEmpty());  // a patient id, not a study
  EXPECT_THROW(index_->cacheSlotsUnder(ResourceLevel::Patient, ""), std::invalid_argument);
  EXPECT_EQ(index_->instanceCount(), 16);  // looking removes nothing
}

TEST_F(ResourceTreeTest, RemovesAPatient) {
  const auto removed = index_->removeInstancesUnder(ResourceLevel::Patient, "p1");
  EXPECT_EQ(removed, instancesStartingWith("p1"));
  EXPECT_EQ(removed.size(), 8u);
  EXPECT_EQ(index_->instanceCount(), 8);
  expectRemovedExactly("p1");
  EXPECT_EQ(annotatedStudies(), (std::set<std::string>{"p2s1", "p2s2"}));
  EXPECT_EQ(index_->reportInstanceIds(), (std::vector<std::string>{"sr-p2s1", "sr-p2s2"}));
  expectSlotsReused(removed);
}

TEST_F(ResourceTreeTest, RemovesAStudy) {
  const auto removed = index_->removeInstancesUnder(ResourceLevel::Study, "p1s2");
  EXPECT_EQ(removed, instancesStartingWith("p1s2"));
  EXPECT_EQ(removed.size(), 4u);
  EXPECT_EQ(index_->instanceCount(), 12);
  expectRemovedExactly("p1s2");
  EXPECT_EQ(annotatedStudies(), (std::set<std::string>{"p1s1", "p2s1", "p2s2"}));
  expectSlotsReused(removed);
}

TEST_F(ResourceTreeTest, RemovesTheAnnotationOfAStudyWithoutRows) {
  index_->putStudyAnnotation(annotation("empty-study", "sr-empty"));
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Study, "empty-study"), IsEmpty());
  EXPECT_FALSE(index_->studyAnnotation("empty-study"));
  EXPECT_EQ(index_->studyAnnotationCount(), 4);
  EXPECT_EQ(index_->instanceCount(), 16);
}

TEST_F(ResourceTreeTest, RemovesASeriesAndTheStudyAnnotationOnlyWithItsLastSeries) {
  auto removed = index_->removeInstancesUnder(ResourceLevel::Series, "p2s1x2");
  EXPECT_EQ(removed, instancesStartingWith("p2s1x2"));
  EXPECT_EQ(removed.size(), 2u);
  expectRemovedExactly("p2s1x2");
  // The study still has its other series: it was not removed, and keeps its annotation.
  EXPECT_EQ(annotatedStudies(), (std::set<std::string>{"p1s1", "p1s2", "p2s1", "p2s2"}));

  auto last = index_->removeInstancesUnder(ResourceLevel::Series, "p2s1x1");
  EXPECT_EQ(last, instancesStartingWith("p2s1x1"));
  EXPECT_EQ(annotatedStudies(), (std::set<std::string>{"p1s1", "p1s2", "p2s2"}));
  EXPECT_EQ(index_->instanceCount(), 12);
  removed.insert(removed.end(), last.begin(), last.end());
  expectSlotsReused(removed);
}

TEST_F(ResourceTreeTest, RemovesOneInstance) {
  const auto removed = index_->removeInstancesUnder(ResourceLevel::Instance, "p1s1x2i1");
  EXPECT_THAT(removed, ElementsAre("p1s1x2i1"));
  EXPECT_EQ(index_->instanceCount(), 15);
  expectRemovedExactly("p1s1x2i1");
  EXPECT_EQ(annotatedStudies().size(), 4u);
  expectSlotsReused(removed);
}

TEST_F(ResourceTreeTest, RemovingTheLastInstanceOfAStudyRemovesItsAnnotation) {
  for (const std::string& name : instancesStartingWith("p2s2")) {
    EXPECT_EQ(annotatedStudies().count("p2s2"), 1u);
    EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Instance, name), ElementsAre(name));
  }
  EXPECT_EQ(annotatedStudies(), (std::set<std::string>{"p1s1", "p1s2", "p2s1"}));
}

TEST_F(ResourceTreeTest, UnknownOrMislevelledIdsRemoveNothing) {
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Patient, "p3"), IsEmpty());
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Study, "p3s1"), IsEmpty());
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Series, "p3s1x1"), IsEmpty());
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Instance, "p3s1x1i1"), IsEmpty());
  // Ids of another level match nothing: each level has its own column.
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Patient, "p1s1"), IsEmpty());
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Series, "p1s1"), IsEmpty());
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Instance, "p1s1x1"), IsEmpty());
  EXPECT_THAT(index_->removeInstancesUnder(ResourceLevel::Study, "p1"), IsEmpty());
  EXPECT_THROW(index_->removeInstancesUnder(ResourceLevel::Patient, ""), std::invalid_argument);
  EXPECT_EQ(index_->instanceCount(), 16);
  expectRemovedExactly("none");
  EXPECT_EQ(index_->studyAnnotationCount(), 4);
  expectSlotsReused({});
}

TEST_F(ResourceTreeTest, FreedSlotsArePersisted) {
  const auto removed = index_->removeInstancesUnder(ResourceLevel::Series, "p1s1x1");
  index_.reset();
  index_ = std::make_unique<Index>(path());
  expectSlotsReused(removed);
}

// --- study annotations

TEST_F(IndexV2Test, StudyResourceIdsComeFromRowsAndAnnotationsOnce) {
  Index index(path());
  EXPECT_THAT(index.studyResourceIds(), IsEmpty());
  index.upsertInstance(orthancRecord("p", "s-b", "x", "i1"));
  index.upsertInstance(orthancRecord("p", "s-b", "x", "i2"));
  index.upsertInstance(orthancRecord("p", "s-a", "y", "i3"));
  InstanceRecord offline;  // indexed without Orthanc ids
  offline.resourceId = "sha1:abc";
  index.upsertInstance(offline);
  index.putStudyAnnotation(annotation("s-c"));  // annotated, its rows already gone
  index.putStudyAnnotation(annotation("s-a"));
  EXPECT_EQ(index.studyResourceIds(), (std::vector<std::string>{"s-a", "s-b", "s-c"}));
}

TEST_F(IndexV2Test, StudyAnnotationsPutReplaceGetRemove) {
  Index index(path());
  EXPECT_FALSE(index.studyAnnotation("s1"));
  EXPECT_EQ(index.studyAnnotationCount(), 0);
  EXPECT_THAT(index.reportInstanceIds(), IsEmpty());

  StudyAnnotationRecord a = annotation("s1", "sr-b");
  index.putStudyAnnotation(a);
  auto got = index.studyAnnotation("s1");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->studyResourceId, "s1");
  EXPECT_EQ(got->studyInstanceUid, "uid-s1");
  EXPECT_EQ(got->fingerprint, "fp-s1");
  EXPECT_EQ(got->modelVersion, 1);
  EXPECT_EQ(got->qualityFlag, "good");
  EXPECT_EQ(got->reportJson, R"({"study":"s1"})");
  EXPECT_EQ(got->srInstanceId, "sr-b");
  EXPECT_THAT(got->annotatedAt, ::testing::MatchesRegex(kIsoUtc));

  // Replaced as a whole; optional fields may become empty; an explicit time is kept.
  StudyAnnotationRecord b;
  b.studyResourceId = "s1";
  b.fingerprint = "fp2";
  b.reportJson = "{}";
  b.annotatedAt = "2024-03-01T12:00:00.000Z";
  index.putStudyAnnotation(b);
  got = index.studyAnnotation("s1");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->studyInstanceUid, "");
  EXPECT_EQ(got->fingerprint, "fp2");
  EXPECT_EQ(got->modelVersion, std::nullopt);
  EXPECT_EQ(got->qualityFlag, std::nullopt);
  EXPECT_EQ(got->reportJson, "{}");
  EXPECT_EQ(got->srInstanceId, "");
  EXPECT_EQ(got->annotatedAt, "2024-03-01T12:00:00.000Z");
  EXPECT_EQ(index.studyAnnotationCount(), 1);

  index.putStudyAnnotation(a);  // a's empty time: now again
  EXPECT_THAT(index.studyAnnotation("s1")->annotatedAt, ::testing::MatchesRegex(kIsoUtc));
  EXPECT_NE(index.studyAnnotation("s1")->annotatedAt, "2024-03-01T12:00:00.000Z");
  index.putStudyAnnotation(annotation("s2", "sr-a"));
  index.putStudyAnnotation(annotation("s3"));  // no SR
  EXPECT_EQ(index.studyAnnotationCount(), 3);
  EXPECT_EQ(index.reportInstanceIds(), (std::vector<std::string>{"sr-a", "sr-b"}));

  EXPECT_TRUE(index.removeStudyAnnotation("s1"));
  EXPECT_FALSE(index.removeStudyAnnotation("s1"));
  EXPECT_FALSE(index.studyAnnotation("s1"));
  EXPECT_EQ(index.reportInstanceIds(), (std::vector<std::string>{"sr-a"}));
  EXPECT_EQ(index.studyAnnotationCount(), 2);

  StudyAnnotationRecord bad = annotation("s4");
  bad.qualityFlag = "great";
  EXPECT_THROW(index.putStudyAnnotation(bad), DatabaseError);
  EXPECT_THROW(index.putStudyAnnotation(annotation("")), std::invalid_argument);
  EXPECT_EQ(index.studyAnnotationCount(), 2);
}

TEST_F(IndexV2Test, StudyAnnotationsPersist) {
  {
    Index index(path());
    index.putStudyAnnotation(annotation("s1", "sr-1"));
  }
  Index index(path());
  EXPECT_EQ(index.studyAnnotation("s1")->fingerprint, "fp-s1");
  EXPECT_EQ(index.reportInstanceIds(), (std::vector<std::string>{"sr-1"}));
}

// --- counts

TEST_F(IndexV2Test, CountsByDecodeStateQualityFlagAndReason) {
  Index index(path());
  EXPECT_THAT(index.decodeStateCounts(), IsEmpty());
  EXPECT_THAT(index.qualityFlagCounts(), IsEmpty());
  EXPECT_THAT(index.qualityReasonCounts(), IsEmpty());

  auto withState = [](const std::string& id, DecodeState state) {
    InstanceRecord r = orthancRecord("p", "s", "x", id);
    r.decodeState = state;
    return r;
  };
  index.putInstanceWithQuality(withState("1", DecodeState::Decoded), qualityOf(std::string("good"), ""));
  index.putInstanceWithQuality(withState("2", DecodeState::Decoded),
                               qualityOf(std::string("usable"), "low contrast"));
  index.putInstanceWithQuality(withState("3", DecodeState::Decoded),
                               qualityOf(std::string("reject"), "low contrast; clipped highlights"));
  index.putInstanceWithQuality(withState("4", DecodeState::Decoded),
                               qualityOf(std::string("reject"), " clipped highlights ;noisy;"));
  index.putInstanceWithQuality(withState("5", DecodeState::Decoded), qualityOf(std::nullopt, "noisy"));
  index.putInstanceWithQuality(withState("6", DecodeState::Decoded), qualityOf(std::nullopt, ""));
  index.putInstanceWithQuality(withState("7", DecodeState::Skipped), std::nullopt);
  index.putInstanceWithQuality(withState("8", DecodeState::Failed), std::nullopt);
  index.putInstanceWithQuality(withState("9", DecodeState::Failed), std::nullopt);
  index.putInstanceWithQuality(withState("10", DecodeState::Unsupported), std::nullopt);

  EXPECT_EQ(index.decodeStateCounts(),
            (std::map<std::string, std::int64_t>{
                {"decoded", 6}, {"skipped", 1}, {"failed", 2}, {"unsupported", 1}}));
  EXPECT_EQ(index.decodeStateCounts(), index.summary().byState);
  EXPECT_EQ(index.qualityFlagCounts(),
            (std::map<std::string, std::int64_t>{{"good", 1}, {"usable", 1}, {"reject", 2}, {"", 2}}));
  EXPECT_EQ(index.qualityReasonCounts(), (std::map<std::string, std::int64_t>{
                                             {"low contrast", 2}, {"clipped highlights", 2}, {"noisy", 2}}));
}

// --- instance and quality together

TEST_F(IndexV2Test, PutInstanceWithQualityWritesReplacesAndDeletesTheQuality) {
  Index index(path());
  QualityRecord q = qualityOf(std::string("usable"), "low contrast");
  q.instanceId = 999;  // ignored: the row id is used
  q.clipLow = 0.25;
  q.bodyClipLow = 0.125;
  q.bodyClipHigh = 0.0625;
  q.bodyMean = 0.375;
  const std::int64_t id = index.putInstanceWithQuality(orthancRecord("p", "s", "x", "i"), q);
  EXPECT_EQ(index.findInstance("i")->id, id);
  EXPECT_FALSE(index.quality(999));
  auto got = index.quality(id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->instanceId, id);
  EXPECT_DOUBLE_EQ(got->clipLow, 0.25);
  EXPECT_DOUBLE_EQ(got->bodyClipLow, 0.125);
  EXPECT_DOUBLE_EQ(got->bodyClipHigh, 0.0625);
  EXPECT_DOUBLE_EQ(got->bodyMean, 0.375);
  EXPECT_EQ(got->flag, "usable");

  QualityRecord second = qualityOf(std::string("good"), "");
  second.bodyMean = 0.5;
  InstanceRecord changed = orthancRecord("p", "s", "x2", "i");
  EXPECT_EQ(index.putInstanceWithQuality(changed, second), id);
  got = index.quality(id);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->flag, "good");
  EXPECT_EQ(got->reasons, "");
  EXPECT_DOUBLE_EQ(got->bodyMean, 0.5);
  EXPECT_DOUBLE_EQ(got->bodyClipLow, 0);
  EXPECT_EQ(index.findInstance("i")->seriesResourceId, "x2");

  InstanceRecord failed = changed;
  failed.decodeState = DecodeState::Failed;
  EXPECT_EQ(index.putInstanceWithQuality(failed, std::nullopt), id);
  EXPECT_FALSE(index.quality(id));
  EXPECT_EQ(index.findInstance("i")->decodeState, DecodeState::Failed);
  EXPECT_EQ(index.putInstanceWithQuality(failed, std::nullopt), id);  // nothing to delete: fine
}

TEST_F(IndexV2Test, PutInstanceWithQualityIsAllOrNothing) {
  Index index(path());
  const std::int64_t freed = index.reserveCacheSlot();
  index.releaseCacheSlot(freed);

  // A new row whose quality is refused is not written, and its slot stays free.
  QualityRecord bad = qualityOf(std::string("great"), "");
  EXPECT_THROW(index.putInstanceWithQuality(orthancRecord("p", "s", "x", "new", freed), bad), DatabaseError);
  EXPECT_FALSE(index.findInstance("new"));
  EXPECT_EQ(index.instanceCount(), 0);
  EXPECT_EQ(index.reserveCacheSlot(), freed);
  index.releaseCacheSlot(freed);

  // An existing row keeps its fields and its quality when the new quality is refused.
  const std::int64_t id =
      index.putInstanceWithQuality(orthancRecord("p", "s", "x", "old"), qualityOf(std::string("good"), ""));
  InstanceRecord moved = orthancRecord("p", "s", "y", "old", freed);
  EXPECT_THROW(index.putInstanceWithQuality(moved, bad), DatabaseError);
  auto row = index.findInstance("old");
  ASSERT_TRUE(row);
  EXPECT_EQ(row->seriesResourceId, "x");
  EXPECT_EQ(row->cacheSlot, std::nullopt);
  EXPECT_EQ(index.quality(id)->flag, "good");
  EXPECT_EQ(index.reserveCacheSlot(), freed);

  // A refused row (slot held by another row) leaves the earlier quality in place.
  index.upsertInstance(orthancRecord("p", "s", "x", "holder", 40));
  EXPECT_THROW(index.putInstanceWithQuality(orthancRecord("p", "s", "x", "old", 40), std::nullopt),
               DatabaseError);
  EXPECT_EQ(index.quality(id)->flag, "good");
}

// --- predictions of one model

TEST_F(IndexV2Test, PredictionsOfModelFilterByVersion) {
  Index index(path());
  const std::int64_t id = index.upsertInstance(orthancRecord("p", "s", "x", "a"));
  const std::int64_t other = index.upsertInstance(orthancRecord("p", "s", "x", "b"));
  index.putPredictions({{id, 2, "Effusion", 0.25},
                        {id, 1, "Effusion", 0.5},
                        {id, 2, "Atelectasis", 0.125},
                        {other, 2, "Cardiomegaly", 0.75}});
  const auto two = index.predictionsOfModel(id, 2);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].finding, "Atelectasis");  // by finding
  EXPECT_DOUBLE_EQ(two[0].score, 0.125);
  EXPECT_EQ(two[1].finding, "Effusion");
  EXPECT_DOUBLE_EQ(two[1].score, 0.25);
  for (const auto& p : two) {
    EXPECT_EQ(p.instanceId, id);
    EXPECT_EQ(p.modelVersion, 2);
  }
  const auto one = index.predictionsOfModel(id, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_DOUBLE_EQ(one[0].score, 0.5);
  EXPECT_THAT(index.predictionsOfModel(id, 3), IsEmpty());
  EXPECT_THAT(index.predictionsOfModel(other + 10, 2), IsEmpty());
}

// --- thread safety of the new calls

TEST_F(IndexV2Test, ConcurrentPutsAndRemovalsUnderResourcesAreSerialised) {
  Index index(path());
  constexpr int kThreads = 4;
  constexpr int kStudies = 20;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string patient = "p" + std::to_string(t);
      for (int s = 0; s < kStudies; ++s) {
        const std::string study = patient + "s" + std::to_string(s);
        for (int i = 0; i < 3; ++i) {
          index.putInstanceWithQuality(
              orthancRecord(patient, study, study + "x", study + "i" + std::to_string(i),
                            index.reserveCacheSlot()),
              qualityOf(std::string("good"), "r"));
        }
        index.putStudyAnnotation(annotation(study, "sr-" + study));
        if (s % 2 == 0) {
          EXPECT_EQ(index.removeInstancesUnder(ResourceLevel::Study, study).size(), 3u);
        }
        index.decodeStateCounts();
        index.qualityReasonCounts();
      }
    });
  }
  for (auto& thread : threads) {
    thread.join();
  }
  const std::int64_t kept = kThreads * (kStudies / 2);
  EXPECT_EQ(index.instanceCount(), 3 * kept);
  EXPECT_EQ(index.studyAnnotationCount(), kept);
  EXPECT_EQ(index.reportInstanceIds().size(), static_cast<std::size_t>(kept));
  EXPECT_EQ(index.qualityReasonCounts(), (std::map<std::string, std::int64_t>{{"r", 3 * kept}}));
  // Every slot in use is distinct, and the freed ones are all reusable.
  std::set<std::int64_t> inUse;
  Statement slots = index.connection().prepare("SELECT cache_slot FROM instances");
  while (slots.step()) {
    inUse.insert(slots.columnInt(0));
  }
  EXPECT_EQ(inUse.size(), static_cast<std::size_t>(3 * kept));
  for (std::int64_t i = 0; i < 3 * kept; ++i) {
    EXPECT_EQ(inUse.count(index.reserveCacheSlot()), 0u);
  }
}

}  // namespace
}  // namespace comcl::storage
