#include "comcl/storage/sqlite.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <stdexcept>
#include <string>

#include "comcl/storage/index.h"
#include "comcl/storage/schema.h"
#include "temp_dir.h"

namespace comcl::storage {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

std::int64_t scalar(Connection& c, const std::string& sql) {
  Statement s = c.prepare(sql);
  EXPECT_TRUE(s.step()) << sql;
  return s.columnInt(0);
}

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const DatabaseError& e) {
    return e.what();
  }
  return "(no DatabaseError)";
}

// --- Connection

TEST(Sqlite, OpensInWalModeWithForeignKeysAndBusyTimeout) {
  TempDir dir;
  Connection c(dir.file("a.db"), 1234);
  EXPECT_EQ(c.journalMode(), "wal");
  EXPECT_EQ(scalar(c, "PRAGMA foreign_keys"), 1);
  EXPECT_EQ(scalar(c, "PRAGMA busy_timeout"), 1234);
  EXPECT_EQ(c.path(), dir.file("a.db"));
}

TEST(Sqlite, MemoryDatabaseWorksWithoutWal) {
  Connection c(":memory:");
  c.execScript("CREATE TABLE t (x INTEGER)");
  c.prepare("INSERT INTO t VALUES (?)").bind(1, 7).run();
  EXPECT_EQ(scalar(c, "SELECT x FROM t"), 7);
  EXPECT_EQ(c.journalMode(), "memory");
}

TEST(Sqlite, OpeningADirectoryFails) {
  TempDir dir;
  EXPECT_THROW(Connection(dir.path().string()), DatabaseError);
}

TEST(Sqlite, BindsAndReadsEveryType) {
  Connection c(":memory:");
  c.execScript("CREATE TABLE t (i INTEGER, d REAL, s TEXT, n TEXT, o INTEGER)");
  const std::string withNul("a\0b", 3);
  c.prepare("INSERT INTO t VALUES (?, ?, ?, ?, ?)")
      .bind(1, std::int64_t{1} << 40)
      .bind(2, 2.5)
      .bind(3, withNul)
      .bind(4, std::optional<std::string>())
      .bind(5, std::optional<std::int64_t>(9))
      .run();
  Statement s = c.prepare("SELECT i, d, s, n, o FROM t");
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.columnInt(0), std::int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(s.columnDouble(1), 2.5);
  EXPECT_EQ(s.columnText(2), withNul);
  EXPECT_TRUE(s.isNull(3));
  EXPECT_EQ(s.columnOptionalText(3), std::nullopt);
  EXPECT_EQ(s.columnOptionalInt(4), 9);
  EXPECT_EQ(s.columnOptionalDouble(3), std::nullopt);
  EXPECT_FALSE(s.step());
}

TEST(Sqlite, EmptyStringViewBindsEmptyTextNotNull) {
  Connection c(":memory:");
  Statement s = c.prepare("SELECT ? IS NULL, length(?)");
  s.bind(1, std::string_view()).bind(2, std::string_view());
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.columnInt(0), 0);
  EXPECT_EQ(s.columnInt(1), 0);
}

TEST(Sqlite, ResetAllowsReuseWithNewBindings) {
  Connection c(":memory:");
  Statement s = c.prepare("SELECT ? + 1");
  for (int i = 0; i < 3; ++i) {
    s.bind(1, i);
    ASSERT_TRUE(s.step());
    EXPECT_EQ(s.columnInt(0), i + 1);
    s.reset();
  }
}

TEST(Sqlite, PrepareErrorCarriesMessageAndSql) {
  Connection c(":memory:");
  const std::string message = errorOf([&] { c.prepare("SELEKT 1"); });
  EXPECT_THAT(message, HasSubstr("syntax error"));
  EXPECT_THAT(message, HasSubstr("SELEKT 1"));
}

TEST(Sqlite, StepErrorCarriesMessageAndSqlAndLeavesStatementReusable) {
  Connection c(":memory:");
  c.execScript("CREATE TABLE t (x INTEGER UNIQUE)");
  Statement insert = c.prepare("INSERT INTO t VALUES (?)");
  insert.bind(1, 1).run();
  insert.reset();
  insert.bind(1, 1);
  const std::string message = errorOf([&] { insert.run(); });
  EXPECT_THAT(message, HasSubstr("UNIQUE constraint failed"));
  EXPECT_THAT(message, HasSubstr("INSERT INTO t VALUES (?)"));
  insert.reset();
  insert.bind(1, 2).run();
  EXPECT_EQ(scalar(c, "SELECT COUNT(*) FROM t"), 2);
}

TEST(Sqlite, ExecScriptErrorCarriesSql) {
  Connection c(":memory:");
  const std::string message = errorOf([&] { c.execScript("CREATE TABLE t (x); CREATE TABLE t (y);"); });
  EXPECT_THAT(message, HasSubstr("already exists"));
  EXPECT_THAT(message, HasSubstr("CREATE TABLE t (y)"));
}

TEST(Sqlite, PrepareRefusesSeveralStatements) {
  Connection c(":memory:");
  EXPECT_THROW(c.prepare("SELECT 1; SELECT 2"), DatabaseError);
  EXPECT_NO_THROW(c.prepare("SELECT 1;  "));
}

TEST(Sqlite, RunRefusesAStatementThatReturnsRows) {
  Connection c(":memory:");
  Statement s = c.prepare("SELECT 1");
  EXPECT_THROW(s.run(), DatabaseError);
}

TEST(Sqlite, MovedStatementAndConnectionStayUsable) {
  Connection first(":memory:");
  Connection c(std::move(first));
  Statement a = c.prepare("SELECT 42");
  Statement b(std::move(a));
  ASSERT_TRUE(b.step());
  EXPECT_EQ(b.columnInt(0), 42);
  Connection other(":memory:");
  other = std::move(c);
  EXPECT_EQ(scalar(other, "SELECT 5"), 5);
}

// --- Transaction

TEST(Sqlite, TransactionCommits) {
  TempDir dir;
  {
    Connection c(dir.file("t.db"));
    c.execScript("CREATE TABLE t (x INTEGER)");
    Transaction t(c);
    c.prepare("INSERT INTO t VALUES (1)").run();
    t.commit();
  }
  Connection c(dir.file("t.db"));
  EXPECT_EQ(scalar(c, "SELECT COUNT(*) FROM t"), 1);
}

TEST(Sqlite, TransactionRollsBackWhenAnExceptionLeavesTheScope) {
  Connection c(":memory:");
  c.execScript("CREATE TABLE t (x INTEGER)");
  try {
    Transaction t(c);
    c.prepare("INSERT INTO t VALUES (1)").run();
    throw std::runtime_error("boom");
  } catch (const std::runtime_error&) {
  }
  EXPECT_EQ(scalar(c, "SELECT COUNT(*) FROM t"), 0);
  // The connection is usable again: a new transaction can start.
  Transaction t(c);
  c.prepare("INSERT INTO t VALUES (2)").run();
  t.commit();
  EXPECT_EQ(scalar(c, "SELECT COUNT(*) FROM t"), 1);
}

TEST(Sqlite, TransactionRollsBackAfterAFailedStatement) {
  Connection c(":memory:");
  c.execScript("CREATE TABLE t (x INTEGER UNIQUE)");
  EXPECT_THROW(
      {
        Transaction t(c);
        c.prepare("INSERT INTO t VALUES (1)").run();
        c.prepare("INSERT INTO t VALUES (1)").run();
        t.commit();
      },
      DatabaseError);
  EXPECT_EQ(scalar(c, "SELECT COUNT(*) FROM t"), 0);
}

TEST(Sqlite, TransactionTakesTheWriteLockAtOnce) {
  TempDir dir;
  Connection a(dir.file("lock.db"));
  a.execScript("CREATE TABLE t (x INTEGER)");
  Connection b(dir.file("lock.db"), 0);
  {
    Transaction t(a);  // BEGIN IMMEDIATE: holds the write lock before any write
    EXPECT_THAT(errorOf([&] { b.prepare("INSERT INTO t VALUES (1)").run(); }), HasSubstr("locked"));
    EXPECT_EQ(scalar(b, "SELECT COUNT(*) FROM t"), 0);  // WAL: readers are not blocked
  }
  b.prepare("INSERT INTO t VALUES (1)").run();  // rolled back and released
  EXPECT_EQ(scalar(a, "SELECT COUNT(*) FROM t"), 1);
}

// --- Schema and migrations

TEST(Schema, MigratesAnEmptyDatabaseToTheCurrentVersion) {
  TempDir dir;
  Connection c(dir.file("s.db"));
  EXPECT_EQ(schemaVersion(c), 0);
  EXPECT_EQ(migrate(c), 0);
  EXPECT_EQ(schemaVersion(c), currentSchemaVersion());
  EXPECT_GE(currentSchemaVersion(), 1);
  for (const char* table :
       {"instances", "quality", "labels", "predictions", "splits", "model_versions", "training_runs",
        "change_cursor", "kv_values", "free_cache_slots", "schema_version"}) {
    Statement s = c.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?");
    s.bind(1, table);
    EXPECT_TRUE(s.step()) << table;
  }
  Statement applied = c.prepare("SELECT applied_at FROM schema_version WHERE version = 1");
  ASSERT_TRUE(applied.step());
  EXPECT_THAT(applied.columnText(0),
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z"));
}

TEST(Schema, ReopeningIsIdempotentAndKeepsData) {
  TempDir dir;
  {
    Connection c(dir.file("s.db"));
    migrate(c);
    c.execScript("INSERT INTO kv_values (name, value, updated_at) VALUES ('k', 'v', 'now')");
  }
  Connection c(dir.file("s.db"));
  EXPECT_EQ(migrate(c), currentSchemaVersion());
  EXPECT_EQ(migrate(c), currentSchemaVersion());
  EXPECT_EQ(scalar(c, "SELECT COUNT(*) FROM schema_version"), currentSchemaVersion());
  EXPECT_EQ(scalar(c, "SELECT COUNT(*) FROM kv_values"), 1);
}

TEST(Schema, RefusesADatabaseFromANewerBuild) {
  TempDir dir;
  const std::string path = dir.file("s.db");
  {
    Connection c(path);
    migrate(c);
    c.prepare("INSERT INTO schema_version (version, applied_at) VALUES (?, 'x')")
        .bind(1, currentSchemaVersion() + 1)
        .run();
  }
  Connection c(path);
  const std::string message = errorOf([&] { migrate(c); });
  EXPECT_THAT(message, HasSubstr("newer"));
  EXPECT_THAT(message, HasSubstr(std::to_string(currentSchemaVersion() + 1)));
  EXPECT_THROW(Index{path}, DatabaseError);
}

TEST(Schema, ConstraintsRejectUnknownStatesAndSplits) {
  Connection c(":memory:");
  migrate(c);
  EXPECT_THAT(errorOf([&] {
                c.execScript(
                    "INSERT INTO instances (resource_id, decode_state, created_at, updated_at)"
                    " VALUES ('r', 'maybe', 'x', 'x')");
              }),
              HasSubstr("CHECK constraint failed"));
  EXPECT_THAT(errorOf([&] {
                c.execScript(
                    "INSERT INTO splits (patient_key, split, seed, assigned_at) VALUES ('p', 'dev', 1, 'x')");
              }),
              HasSubstr("CHECK constraint failed"));
  // Foreign keys are enforced.
  EXPECT_THAT(errorOf([&] {
                c.execScript(
                    "INSERT INTO quality (instance_id, sharpness, noise, contrast, clip_low, clip_high,"
                    " dynamic_range, mean_intensity, updated_at) VALUES (99, 0, 0, 0, 0, 0, 0, 0, 'x')");
              }),
              HasSubstr("FOREIGN KEY"));
}

TEST(Schema, QueriesByPatientAndStudyUseTheirIndexes) {
  Connection c(":memory:");
  migrate(c);
  for (const char* where : {"patient_key = ?", "study_instance_uid = ?", "series_instance_uid = ?"}) {
    Statement plan =
        c.prepare(std::string("EXPLAIN QUERY PLAN SELECT * FROM instances WHERE ") + where + " ORDER BY id");
    plan.bind(1, "x");
    std::string details;
    while (plan.step()) {
      details += plan.columnText(3) + "\n";
    }
    EXPECT_THAT(details, HasSubstr("USING INDEX")) << where;
    EXPECT_THAT(details, ::testing::Not(HasSubstr("TEMP B-TREE"))) << where;
  }
}

}  // namespace
}  // namespace comcl::storage
