#include "comcl/storage/schema.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace comcl::storage {
namespace {

// Forward migrations: entry i brings the schema from version i to i + 1. Never edit a released entry;
// append a new one (ALTER TABLE ADD COLUMN, new tables, or create-copy-rename for constraint changes).
// Timestamps are ISO-8601 UTC text written by the code (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')).
const std::vector<std::string>& migrations() {
  static const std::vector<std::string> scripts = {
      // v1: the initial schema.
      R"sql(
CREATE TABLE instances (
  id                  INTEGER PRIMARY KEY,
  resource_id         TEXT    NOT NULL UNIQUE,
  source              TEXT    NOT NULL DEFAULT '',
  sop_instance_uid    TEXT    NOT NULL DEFAULT '',
  series_instance_uid TEXT    NOT NULL DEFAULT '',
  study_instance_uid  TEXT    NOT NULL DEFAULT '',
  sop_class_uid       TEXT    NOT NULL DEFAULT '',
  patient_key         TEXT,
  study_date          TEXT,
  view_position       TEXT,
  laterality          TEXT,
  modality            TEXT,
  body_part           TEXT,
  image_rows          INTEGER NOT NULL DEFAULT 0,
  image_cols          INTEGER NOT NULL DEFAULT 0,
  frames              INTEGER NOT NULL DEFAULT 0,
  bits_stored         INTEGER NOT NULL DEFAULT 0,
  transfer_syntax_uid TEXT    NOT NULL DEFAULT '',
  photometric         TEXT    NOT NULL DEFAULT '',
  decode_state        TEXT    NOT NULL
                      CHECK (decode_state IN ('decoded', 'skipped', 'unsupported', 'failed')),
  decode_reason       TEXT    NOT NULL DEFAULT '',
  metadata_issues     TEXT    NOT NULL DEFAULT '',
  cache_slot          INTEGER UNIQUE CHECK (cache_slot IS NULL OR cache_slot >= 0),
  content_x           INTEGER NOT NULL DEFAULT 0,
  content_y           INTEGER NOT NULL DEFAULT 0,
  content_width       INTEGER NOT NULL DEFAULT 0,
  content_height      INTEGER NOT NULL DEFAULT 0,
  created_at          TEXT    NOT NULL,
  updated_at          TEXT    NOT NULL
);
CREATE INDEX instances_patient ON instances (patient_key);
CREATE INDEX instances_study ON instances (study_instance_uid);
CREATE INDEX instances_series ON instances (series_instance_uid);

CREATE TABLE quality (
  instance_id    INTEGER PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
  sharpness      REAL NOT NULL,
  noise          REAL NOT NULL,
  contrast       REAL NOT NULL,
  clip_low       REAL NOT NULL,
  clip_high      REAL NOT NULL,
  dynamic_range  REAL NOT NULL,
  mean_intensity REAL NOT NULL,
  flag           TEXT CHECK (flag IS NULL OR flag IN ('good', 'usable', 'reject')),
  reasons        TEXT NOT NULL DEFAULT '',
  updated_at     TEXT NOT NULL
);
CREATE INDEX quality_flag ON quality (flag);

CREATE TABLE labels (
  scope      TEXT NOT NULL,
  key        TEXT NOT NULL,
  finding    TEXT NOT NULL,
  value      REAL NOT NULL,
  source     TEXT NOT NULL DEFAULT '',
  updated_at TEXT NOT NULL,
  PRIMARY KEY (scope, key, finding)
) WITHOUT ROWID;
CREATE INDEX labels_finding ON labels (finding);

CREATE TABLE predictions (
  instance_id   INTEGER NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
  model_version INTEGER NOT NULL,
  finding       TEXT    NOT NULL,
  score         REAL    NOT NULL,
  created_at    TEXT    NOT NULL,
  PRIMARY KEY (instance_id, model_version, finding)
) WITHOUT ROWID;
CREATE INDEX predictions_model ON predictions (model_version);

CREATE TABLE splits (
  patient_key TEXT    PRIMARY KEY,
  split       TEXT    NOT NULL CHECK (split IN ('train', 'val', 'test')),
  seed        INTEGER NOT NULL,
  assigned_at TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE training_runs (
  id            INTEGER PRIMARY KEY,
  job_id        TEXT    NOT NULL DEFAULT '',
  state         TEXT    NOT NULL
                CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'canceled', 'interrupted')),
  request_json  TEXT    NOT NULL DEFAULT '{}',
  started_at    TEXT    NOT NULL,
  finished_at   TEXT,
  error         TEXT    NOT NULL DEFAULT '',
  model_version INTEGER
);
CREATE INDEX training_runs_state ON training_runs (state);

CREATE TABLE model_versions (
  version      INTEGER PRIMARY KEY CHECK (version > 0),
  run_id       INTEGER REFERENCES training_runs (id) ON DELETE SET NULL,
  method       TEXT    NOT NULL DEFAULT '',
  path         TEXT    NOT NULL DEFAULT '',
  status       TEXT    NOT NULL DEFAULT 'candidate' CHECK (status IN ('candidate', 'active', 'retired')),
  metrics_json TEXT    NOT NULL DEFAULT '{}',
  created_at   TEXT    NOT NULL
);

CREATE TABLE change_cursor (
  name       TEXT    PRIMARY KEY,
  seq        INTEGER NOT NULL,
  updated_at TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE kv_values (
  name       TEXT PRIMARY KEY,
  value      TEXT NOT NULL,
  updated_at TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE free_cache_slots (
  slot     INTEGER PRIMARY KEY CHECK (slot >= 0),
  freed_at TEXT NOT NULL
);
)sql",
      // v2: Orthanc parent ids of each instance, quality inside the body region, the plugin's study
      // annotations (report and stored SR), and an index for counts by decode state.
      R"sql(
ALTER TABLE instances ADD COLUMN patient_resource_id TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN study_resource_id TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN series_resource_id TEXT NOT NULL DEFAULT '';
CREATE INDEX instances_patient_resource ON instances (patient_resource_id);
CREATE INDEX instances_study_resource ON instances (study_resource_id);
CREATE INDEX instances_series_resource ON instances (series_resource_id);
CREATE INDEX instances_decode_state ON instances (decode_state);

ALTER TABLE quality ADD COLUMN body_clip_low REAL NOT NULL DEFAULT 0;
ALTER TABLE quality ADD COLUMN body_clip_high REAL NOT NULL DEFAULT 0;
ALTER TABLE quality ADD COLUMN body_mean REAL NOT NULL DEFAULT 0;

CREATE TABLE study_annotations (
  study_resource_id  TEXT    PRIMARY KEY,
  study_instance_uid TEXT    NOT NULL DEFAULT '',
  fingerprint        TEXT    NOT NULL,
  model_version      INTEGER,
  quality_flag       TEXT    CHECK (quality_flag IS NULL OR quality_flag IN ('good', 'usable', 'reject')),
  report_json        TEXT    NOT NULL,
  sr_instance_id     TEXT    NOT NULL DEFAULT '',
  annotated_at       TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX study_annotations_sr ON study_annotations (sr_instance_id);
)sql",
      // v3: lesion boxes supplied with labels (CoMCL's lesion patches), in the original image's pixels.
      R"sql(
CREATE TABLE lesion_boxes (
  id          INTEGER PRIMARY KEY,
  instance_id INTEGER NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
  finding     TEXT    NOT NULL CHECK (finding <> ''),
  x0          REAL    NOT NULL CHECK (x0 >= 0),
  y0          REAL    NOT NULL CHECK (y0 >= 0),
  x1          REAL    NOT NULL,
  y1          REAL    NOT NULL,
  confidence  REAL    NOT NULL DEFAULT 1 CHECK (confidence >= 0 AND confidence <= 1),
  source      TEXT    NOT NULL DEFAULT '',
  created_at  TEXT    NOT NULL,
  CHECK (x1 > x0 AND y1 > y0)
);
CREATE INDEX lesion_boxes_finding ON lesion_boxes (finding, instance_id);
CREATE INDEX lesion_boxes_instance ON lesion_boxes (instance_id, finding, source);
)sql",
      // v4: what a training run reports beyond its state (stage timings, loss curve, metrics, promotion),
      // and each instance's AccessionNumber (labels may be keyed by it).
      R"sql(
ALTER TABLE training_runs ADD COLUMN details_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE instances ADD COLUMN accession_number TEXT NOT NULL DEFAULT '';
CREATE INDEX instances_accession ON instances (accession_number);
)sql",
  };
  return scripts;
}

bool hasVersionTable(Connection& connection) {
  Statement statement =
      connection.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'");
  return statement.step();
}

int readVersion(Connection& connection) {
  if (!hasVersionTable(connection)) {
    return 0;
  }
  Statement statement = connection.prepare("SELECT COALESCE(MAX(version), 0) FROM schema_version");
  statement.step();
  return static_cast<int>(statement.columnInt(0));
}

[[noreturn]] void refuseNewer(Connection& connection, int found) {
  throw DatabaseError("database " + connection.path() + " has schema version " + std::to_string(found) +
                      ", newer than version " + std::to_string(currentSchemaVersion()) +
                      " that this build of comcl knows; upgrade comcl (downgrades are not supported)");
}

}  // namespace

int currentSchemaVersion() {
  return static_cast<int>(migrations().size());
}

int schemaVersion(Connection& connection) {
  return readVersion(connection);
}

int migrate(Connection& connection) {
  return migrate(connection, currentSchemaVersion());
}

int migrate(Connection& connection, int targetVersion) {
  if (targetVersion < 1 || targetVersion > currentSchemaVersion()) {
    throw std::invalid_argument("schema version " + std::to_string(targetVersion) + " is not in 1.." +
                                std::to_string(currentSchemaVersion()));
  }
  const int found = readVersion(connection);
  if (found > currentSchemaVersion()) {
    refuseNewer(connection, found);
  }
  if (found >= targetVersion) {
    return found;  // up to date: no write lock taken
  }
  // One transaction per step; the version is re-read inside it so that two processes opening the same
  // database at once apply each step exactly once.
  for (;;) {
    Transaction transaction(connection);
    connection.execScript(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)");
    const int version = readVersion(connection);
    if (version > currentSchemaVersion()) {
      refuseNewer(connection, version);
    }
    if (version >= targetVersion) {
      transaction.commit();
      break;
    }
    connection.execScript(migrations()[static_cast<std::size_t>(version)]);
    connection
        .prepare(
            "INSERT INTO schema_version (version, applied_at)"
            " VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))")
        .bind(1, version + 1)
        .run();
    transaction.commit();
  }
  return found;
}

}  // namespace comcl::storage
