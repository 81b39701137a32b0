#include "comcl/storage/sqlite.h"

#include <sqlite3.h>

#include <cctype>
#include <utility>

namespace comcl::storage {
namespace {

std::string describe(sqlite3* db, int code, std::string_view sql) {
  std::string message = "sqlite: ";
  message += db ? sqlite3_errmsg(db) : sqlite3_errstr(code);
  message += " (code " + std::to_string(code) + ")";
  if (!sql.empty()) {
    message += " in: ";
    message += sql;
  }
  return message;
}

bool onlyWhitespace(std::string_view text) {
  // A tail left by sqlite3_prepare means a second statement that would be silently ignored.
  for (char c : text) {
    if (!std::isspace(static_cast<unsigned char>(c)) && c != ';') {
      return false;
    }
  }
  return true;
}

}  // namespace

// --- Connection

Connection::Connection(const std::string& path, int busyTimeoutMs) : path_(path) {
  // NOMUTEX: a connection is used by one thread at a time (Index serialises on its own mutex), so SQLite's
  // per-call connection mutex would only add a lock/unlock to every column read.
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  const int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string message = describe(db_, rc, {}) + " opening " + path;
    sqlite3_close(db_);  // sqlite allocates a handle even when opening fails
    db_ = nullptr;
    throw DatabaseError(message);
  }
  try {
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, busyTimeoutMs);
    if (path != ":memory:" && !path.empty()) {
      Statement pragma = prepare("PRAGMA journal_mode = WAL");
      const std::string mode = pragma.step() ? pragma.columnText(0) : std::string();
      if (mode != "wal") {
        throw DatabaseError("sqlite: could not switch " + path + " to WAL mode (journal mode is " + mode +
                            ")");
      }
    }
    // FULL: a committed change is durable, so the index never refers to a cache slot that a later reuse
    // overwrote before the freeing change reached disk.
    execScript("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;");
  } catch (...) {
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw;
  }
}

Connection::~Connection() {
  if (db_) {
    sqlite3_close_v2(db_);  // _v2: closes once outstanding statements are finalised, never leaks
  }
}

Connection::Connection(Connection&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), path_(std::move(other.path_)) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    if (db_) {
      sqlite3_close_v2(db_);
    }
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

Statement Connection::prepare(std::string_view sql) {
  if (!db_) {
    throw DatabaseError("sqlite: connection is closed");
  }
  return Statement(db_, sql);
}

void Connection::execScript(const std::string& sql) {
  if (!db_) {
    throw DatabaseError("sqlite: connection is closed");
  }
  char* error = nullptr;
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    std::string message = "sqlite: ";
    message += error ? error : sqlite3_errstr(rc);
    message += " (code " + std::to_string(rc) + ") in: " + sql;
    sqlite3_free(error);
    throw DatabaseError(message);
  }
}

std::int64_t Connection::lastInsertRowId() const {
  return sqlite3_last_insert_rowid(db_);
}

int Connection::changes() const {
  return sqlite3_changes(db_);
}

std::string Connection::journalMode() {
  Statement statement = prepare("PRAGMA journal_mode");
  return statement.step() ? statement.columnText(0) : std::string();
}

// --- Statement

Statement::Statement(sqlite3* db, std::string_view sql) : db_(db) {
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                                    &stmt_, &tail);
  if (rc != SQLITE_OK) {
    throw DatabaseError(describe(db, rc, sql));
  }
  if (!stmt_) {
    throw DatabaseError("sqlite: empty statement: " + std::string(sql));
  }
  if (tail &&
      !onlyWhitespace(std::string_view(tail, sql.size() - static_cast<std::size_t>(tail - sql.data())))) {
    sqlite3_finalize(stmt_);
    stmt_ = nullptr;
    throw DatabaseError("sqlite: prepare() takes one statement, use execScript() for several: " +
                        std::string(sql));
  }
}

Statement::~Statement() {
  if (stmt_) {
    sqlite3_finalize(stmt_);
  }
}

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), stmt_(std::exchange(other.stmt_, nullptr)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    if (stmt_) {
      sqlite3_finalize(stmt_);
    }
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
  }
  return *this;
}

void Statement::fail(const char* what) const {
  std::string message = "sqlite: ";
  message += what;
  message += ": ";
  message += sqlite3_errmsg(db_);
  message += " (code " + std::to_string(sqlite3_extended_errcode(db_)) + ") in: ";
  message += sqlite3_sql(stmt_);
  sqlite3_reset(stmt_);  // leave the statement reusable after the error
  throw DatabaseError(message);
}

Statement& Statement::bind(int index, std::int64_t value) {
  if (sqlite3_bind_int64(stmt_, index, value) != SQLITE_OK) {
    fail("bind");
  }
  return *this;
}

Statement& Statement::bind(int index, double value) {
  if (sqlite3_bind_double(stmt_, index, value) != SQLITE_OK) {
    fail("bind");
  }
  return *this;
}

Statement& Statement::bind(int index, std::string_view value) {
  // A null data pointer would bind SQL NULL; an empty view must stay an empty string.
  const char* data = value.data() ? value.data() : "";
  if (sqlite3_bind_text64(stmt_, index, data, value.size(), SQLITE_TRANSIENT, SQLITE_UTF8) != SQLITE_OK) {
    fail("bind");
  }
  return *this;
}

Statement& Statement::bindNull(int index) {
  if (sqlite3_bind_null(stmt_, index) != SQLITE_OK) {
    fail("bind");
  }
  return *this;
}

bool Statement::step() {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) {
    return true;
  }
  if (rc == SQLITE_DONE) {
    return false;
  }
  fail("step");
}

void Statement::run() {
  if (step()) {
    sqlite3_reset(stmt_);
    throw DatabaseError(std::string("sqlite: statement returned rows where none were expected: ") +
                        sqlite3_sql(stmt_));
  }
}

void Statement::reset() {
  // The return code repeats the last step's error, which was already reported.
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

bool Statement::isNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::int64_t Statement::columnInt(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

double Statement::columnDouble(int column) const {
  return sqlite3_column_double(stmt_, column);
}

std::string Statement::columnText(int column) const {
  const auto* text = sqlite3_column_text(stmt_, column);
  const int bytes = sqlite3_column_bytes(stmt_, column);  // after _text, as SQLite requires
  return text ? std::string(reinterpret_cast<const char*>(text), static_cast<std::size_t>(bytes))
              : std::string();
}

std::optional<std::string> Statement::columnOptionalText(int column) const {
  if (isNull(column)) {
    return std::nullopt;
  }
  return columnText(column);
}

std::optional<std::int64_t> Statement::columnOptionalInt(int column) const {
  if (isNull(column)) {
    return std::nullopt;
  }
  return columnInt(column);
}

std::optional<double> Statement::columnOptionalDouble(int column) const {
  if (isNull(column)) {
    return std::nullopt;
  }
  return columnDouble(column);
}

// --- Transaction

Transaction::Transaction(Connection& connection) : connection_(connection) {
  connection_.execScript("BEGIN IMMEDIATE");
}

Transaction::~Transaction() {
  // Some errors (SQLITE_FULL, IOERR, ...) roll back on their own; only roll back what is still open.
  if (!done_ && connection_.handle() && !sqlite3_get_autocommit(connection_.handle())) {
    sqlite3_exec(connection_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
  }
}

void Transaction::commit() {
  if (done_) {
    throw DatabaseError("sqlite: transaction already committed");
  }
  connection_.execScript("COMMIT");
  done_ = true;
}

}  // namespace comcl::storage
