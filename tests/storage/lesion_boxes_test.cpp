// Schema version 3: lesion boxes supplied with labels (put, replace by source, read, validation that
// writes nothing on a bad box, removal with the instance) and the v2 -> v3 migration.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "comcl/storage/index.h"
#include "comcl/storage/schema.h"
#include "temp_dir.h"

namespace comcl::storage {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

std::int64_t scalar(Connection& c, const std::string& sql) {
  Statement s = c.prepare(sql);
  s.step();
  return s.columnInt(0);
}

InstanceRecord image(const std::string& resourceId, int cols, int rows) {
  InstanceRecord r;
  r.resourceId = resourceId;
  r.patientKey = "P-" + resourceId;
  r.studyInstanceUid = "1.2." + resourceId;
  r.decodeState = DecodeState::Decoded;
  r.cols = cols;
  r.rows = rows;
  return r;
}

LesionBoxRecord box(const std::string& resourceId, double x0, double y0, double x1, double y1,
                    const std::string& source = "reader", const std::string& finding = "Nodule",
                    double confidence = 1) {
  LesionBoxRecord b;
  b.resourceId = resourceId;
  b.finding = finding;
  b.x0 = x0;
  b.y0 = y0;
  b.x1 = x1;
  b.y1 = y1;
  b.confidence = confidence;
  b.source = source;
  return b;
}

// "resource: x0 y0 x1 y1 confidence source" of each box, for compact comparisons.
std::vector<std::string> describe(const std::vector<LesionBoxRecord>& boxes) {
  std::vector<std::string> out;
  for (const LesionBoxRecord& b : boxes) {
    out.push_back(b.resourceId + ": " + std::to_string(static_cast<int>(b.x0)) + " " +
                  std::to_string(static_cast<int>(b.y0)) + " " + std::to_string(static_cast<int>(b.x1)) +
                  " " + std::to_string(static_cast<int>(b.y1)) + " " +
                  std::to_string(b.confidence).substr(0, 4) + " " + b.source);
  }
  return out;
}

class LesionBoxesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    index_ = std::make_unique<Index>(dir_.file("index.db"));
    a_ = index_->upsertInstance(image("a", 2000, 1500));
    b_ = index_->upsertInstance(image("b", 512, 512));
  }
  TempDir dir_;
  std::unique_ptr<Index> index_;
  std::int64_t a_ = 0, b_ = 0;
};

TEST_F(LesionBoxesTest, PutAndReadBackByFinding) {
  index_->putLesionBoxes({box("b", 10, 20, 30, 40),
                          box("a", 100.5, 200.25, 300, 400, "reader", "Nodule", 0.75),
                          box("a", 0, 0, 2000, 1500, "reader", "Mass")});
  const auto nodules = index_->lesionBoxes("Nodule");
  ASSERT_EQ(nodules.size(), 2u);
  EXPECT_EQ(nodules[0].resourceId, "a");  // by instance row id
  EXPECT_EQ(nodules[0].instanceId, a_);
  EXPECT_DOUBLE_EQ(nodules[0].x0, 100.5);
  EXPECT_DOUBLE_EQ(nodules[0].y0, 200.25);
  EXPECT_DOUBLE_EQ(nodules[0].x1, 300);
  EXPECT_DOUBLE_EQ(nodules[0].y1, 400);
  EXPECT_DOUBLE_EQ(nodules[0].confidence, 0.75);
  EXPECT_EQ(nodules[0].finding, "Nodule");
  EXPECT_EQ(nodules[0].source, "reader");
  EXPECT_EQ(nodules[1].resourceId, "b");
  EXPECT_EQ(nodules[1].instanceId, b_);
  EXPECT_EQ(describe(index_->lesionBoxes("Mass")), std::vector<std::string>{"a: 0 0 2000 1500 1.00 reader"});
  EXPECT_TRUE(index_->lesionBoxes("Effusion").empty());
  const auto all = index_->allLesionBoxes();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].finding, "Mass");  // by finding first
}

TEST_F(LesionBoxesTest, APutReplacesTheBoxesOfItsInstanceFindingAndSourceOnly) {
  index_->putLesionBoxes({box("a", 1, 1, 10, 10, "reader"), box("a", 20, 20, 30, 30, "reader"),
                          box("a", 5, 5, 50, 50, "detector"), box("b", 1, 1, 2, 2, "reader"),
                          box("a", 7, 7, 8, 8, "reader", "Mass")});
  // Two boxes in one put for the same triple are both kept (the triple is cleared once, before the first).
  index_->putLesionBoxes({box("a", 100, 100, 110, 110, "reader"), box("a", 200, 200, 210, 210, "reader")});
  EXPECT_EQ(describe(index_->lesionBoxes("Nodule")),
            (std::vector<std::string>{"a: 5 5 50 50 1.00 detector", "a: 100 100 110 110 1.00 reader",
                                      "a: 200 200 210 210 1.00 reader", "b: 1 1 2 2 1.00 reader"}));
  EXPECT_EQ(describe(index_->lesionBoxes("Mass")), std::vector<std::string>{"a: 7 7 8 8 1.00 reader"});
}

TEST_F(LesionBoxesTest, ABoxOutsideItsImageIsRejectedAndNothingOfThePutIsWritten) {
  index_->putLesionBoxes({box("a", 1, 1, 10, 10)});
  const std::vector<LesionBoxRecord> bad = {
      box("a", -1, 0, 10, 10),           // negative
      box("a", 0, -0.5, 10, 10),         // negative
      box("a", 0, 0, 2000.5, 10),        // beyond cols
      box("a", 0, 0, 10, 1501),          // beyond rows
      box("b", 0, 0, 10, 513),           // beyond this image's rows (another size)
      box("a", 10, 0, 10, 10),           // x1 <= x0
      box("a", 0, 10, 10, 9),            // y1 <= y0
      box("a", std::nan(""), 0, 10, 10)  // not a number
  };
  for (const LesionBoxRecord& b : bad) {
    // A good box of another triple and a good box of the stored triple come first: neither may be written,
    // and the stored box must survive the replacement that began.
    try {
      index_->putLesionBoxes({box("b", 1, 1, 5, 5, "other"), box("a", 2, 2, 20, 20), b});
      ADD_FAILURE() << "accepted a box outside the image: " << b.x0 << " " << b.y0 << " " << b.x1 << " "
                    << b.y1;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr("instance " + b.resourceId));
      EXPECT_THAT(e.what(), HasSubstr("outside the image"));
    }
    EXPECT_EQ(describe(index_->allLesionBoxes()), std::vector<std::string>{"a: 1 1 10 10 1.00 reader"});
  }
  try {
    index_->putLesionBoxes({box("a", 0, 0, 2001, 10)});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("lesion box (0, 0, 2001, 10) of 'Nodule' on instance a"));
    EXPECT_THAT(e.what(), HasSubstr("2000x1500 pixels"));
  }
  // The whole image is inside.
  EXPECT_NO_THROW(index_->putLesionBoxes({box("b", 0, 0, 512, 512)}));
}

TEST_F(LesionBoxesTest, UnknownInstancesEmptyFindingsBadConfidenceAndUnknownSizesAreRejected) {
  EXPECT_THAT([&] { index_->putLesionBoxes({box("nope", 1, 1, 2, 2)}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("instance nope: no such instance")));
  EXPECT_THROW(index_->putLesionBoxes({box("a", 1, 1, 2, 2, "reader", "")}), std::invalid_argument);
  EXPECT_THROW(index_->putLesionBoxes({box("a", 1, 1, 2, 2, "reader", "Nodule", 1.5)}),
               std::invalid_argument);
  EXPECT_THROW(index_->putLesionBoxes({box("a", 1, 1, 2, 2, "reader", "Nodule", -0.1)}),
               std::invalid_argument);
  index_->upsertInstance(image("sizeless", 0, 0));
  EXPECT_THAT([&] { index_->putLesionBoxes({box("sizeless", 1, 1, 2, 2)}); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("size is unknown")));
  EXPECT_TRUE(index_->allLesionBoxes().empty());
}

TEST_F(LesionBoxesTest, BoxesGoWithTheirInstanceAndCanBeRemovedBySource) {
  index_->putLesionBoxes({box("a", 1, 1, 10, 10, "reader"), box("a", 1, 1, 10, 10, "detector"),
                          box("b", 1, 1, 10, 10, "reader")});
  EXPECT_EQ(index_->removeLesionBoxes("Nodule", "detector"), 1);
  EXPECT_EQ(index_->removeLesionBoxes("Nodule", "detector"), 0);
  EXPECT_TRUE(index_->removeInstance("a"));
  EXPECT_EQ(describe(index_->allLesionBoxes()), std::vector<std::string>{"b: 1 1 10 10 1.00 reader"});
  EXPECT_EQ(scalar(index_->connection(), "SELECT COUNT(*) FROM lesion_boxes"), 1);
}

TEST_F(LesionBoxesTest, BoxesPersist) {
  index_->putLesionBoxes({box("a", 1, 2, 3, 4)});
  index_.reset();
  Index reopened(dir_.file("index.db"));
  EXPECT_EQ(describe(reopened.lesionBoxes("Nodule")), std::vector<std::string>{"a: 1 2 3 4 1.00 reader"});
}

TEST(SchemaV3, LesionBoxConstraintsAndLookupsByFindingUseAnIndex) {
  Connection c(":memory:");
  migrate(c);
  c.execScript(
      "INSERT INTO instances (id, resource_id, decode_state, created_at, updated_at)"
      " VALUES (1, 'a', 'decoded', 'x', 'x')");
  EXPECT_THROW(c.execScript("INSERT INTO lesion_boxes (instance_id, finding, x0, y0, x1, y1, created_at)"
                            " VALUES (1, 'N', 5, 0, 4, 1, 'x')"),
               DatabaseError);
  EXPECT_THROW(c.execScript("INSERT INTO lesion_boxes (instance_id, finding, x0, y0, x1, y1, created_at)"
                            " VALUES (2, 'N', 0, 0, 4, 1, 'x')"),
               DatabaseError);  // no such instance (foreign key)
  c.execScript(
      "INSERT INTO lesion_boxes (instance_id, finding, x0, y0, x1, y1, created_at)"
      " VALUES (1, 'N', 0, 0, 4, 1, 'x')");
  Statement s = c.prepare("SELECT confidence, source FROM lesion_boxes");
  ASSERT_TRUE(s.step());
  EXPECT_DOUBLE_EQ(s.columnDouble(0), 1);
  EXPECT_EQ(s.columnText(1), "");

  Statement plan =
      c.prepare("EXPLAIN QUERY PLAN SELECT * FROM lesion_boxes WHERE finding = ? ORDER BY instance_id, id");
  plan.bind(1, "N");
  std::string details;
  while (plan.step())
    details += plan.columnText(3) + "\n";
  EXPECT_THAT(details, HasSubstr("USING INDEX lesion_boxes_finding"));
}

// --- migration

TEST(LesionBoxesMigration, MigratesAVersion2DatabaseKeepingItsRows) {
  TempDir dir;
  const std::string path = dir.file("index.db");
  {
    Connection c(path);
    EXPECT_EQ(migrate(c, 2), 0);
    ASSERT_EQ(schemaVersion(c), 2);
    c.execScript(
        "INSERT INTO instances (id, resource_id, source, study_instance_uid, patient_key, decode_state,"
        " image_rows, image_cols, cache_slot, content_x, content_y, content_width, content_height,"
        " study_resource_id, created_at, updated_at) VALUES"
        " (7, 'old-a', '/data/a.dcm', '1.2.3', 'P1', 'decoded', 300, 400, 0, 0, 32, 256, 192, 'st', 'x', "
        "'x');"
        "INSERT INTO labels (scope, key, finding, value, source, updated_at)"
        " VALUES ('instance', 'old-a', 'Nodule', 1, 'csv', 'x');"
        "INSERT INTO study_annotations (study_resource_id, fingerprint, report_json, annotated_at)"
        " VALUES ('st', 'f', '{}', 'x');");
  }
  Index index(path);
  EXPECT_EQ(schemaVersion(index.connection()), currentSchemaVersion());
  EXPECT_GE(currentSchemaVersion(), 3);
  const auto a = index.findInstance("old-a");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->id, 7);
  EXPECT_EQ(a->rows, 300);
  EXPECT_EQ(a->cols, 400);
  EXPECT_EQ(a->contentY, 32);
  EXPECT_EQ(a->contentHeight, 192);
  EXPECT_EQ(index.allLabels().size(), 1u);
  EXPECT_TRUE(index.studyAnnotation("st"));
  // The new table works on the migrated rows.
  EXPECT_TRUE(index.allLesionBoxes().empty());
  index.putLesionBoxes({box("old-a", 10, 20, 400, 300)});
  const auto boxes = index.lesionBoxes("Nodule");
  ASSERT_EQ(boxes.size(), 1u);
  EXPECT_EQ(boxes[0].instanceId, 7);
  EXPECT_THROW(index.putLesionBoxes({box("old-a", 10, 20, 401, 300)}), std::invalid_argument);
}

}  // namespace
}  // namespace comcl::storage
