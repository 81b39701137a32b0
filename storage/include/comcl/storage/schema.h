// Schema versions and forward migrations of the comcl index database.
#pragma once

#include "comcl/storage/sqlite.h"

namespace comcl::storage {

// The schema version this build writes. Opening a newer database fails (downgrades are not supported).
int currentSchemaVersion();

// Brings the database to currentSchemaVersion(), one migration per transaction. Returns the version found
// before migrating (0 for a new database).
int migrate(Connection& connection);
// Same, but stops at `targetVersion` (1..currentSchemaVersion()): builds the databases of older releases for
// migration tests. A database already past `targetVersion` is left as it is. Throws std::invalid_argument
// for a target out of range.
int migrate(Connection& connection, int targetVersion);

int schemaVersion(Connection& connection);

}  // namespace comcl::storage
