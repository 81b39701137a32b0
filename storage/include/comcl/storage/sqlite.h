// RAII wrappers around SQLite: one connection, prepared statements, transactions.
// Every error becomes a comcl::storage::DatabaseError carrying SQLite's message and the statement.
// A Connection and its statements are not thread-safe: use them from one thread at a time (Index does).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace comcl::storage {

class DatabaseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Statement;

class Connection {
 public:
  // Opens (creating if needed) the database at `path` in WAL mode with the given busy timeout.
  // ":memory:" gives a private in-memory database (WAL is not used there).
  explicit Connection(const std::string& path, int busyTimeoutMs = 5000);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;

  Statement prepare(std::string_view sql);
  // Runs statements that take no parameters (schema scripts, pragmas).
  void execScript(const std::string& sql);
  std::int64_t lastInsertRowId() const;
  int changes() const;
  const std::string& path() const { return path_; }
  std::string journalMode();
  sqlite3* handle() const { return db_; }

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// A prepared statement. bind() indices are 1-based as in SQLite. step() returns true while a row is ready.
class Statement {
 public:
  Statement(sqlite3* db, std::string_view sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;

  Statement& bind(int index, std::int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<std::int64_t>(value)); }
  Statement& bind(int index, double value);
  Statement& bind(int index, std::string_view value);
  Statement& bind(int index, const char* value) { return bind(index, std::string_view(value)); }
  Statement& bind(int index, const std::string& value) { return bind(index, std::string_view(value)); }
  Statement& bindNull(int index);
  template <typename T>
  Statement& bind(int index, const std::optional<T>& value) {
    return value ? bind(index, *value) : bindNull(index);
  }

  bool step();
  // Steps once and requires that the statement finished (INSERT/UPDATE/DELETE).
  void run();
  void reset();  // resets and clears bindings so the statement can be reused

  bool isNull(int column) const;
  std::int64_t columnInt(int column) const;
  double columnDouble(int column) const;
  std::string columnText(int column) const;
  std::optional<std::string> columnOptionalText(int column) const;
  std::optional<std::int64_t> columnOptionalInt(int column) const;
  std::optional<double> columnOptionalDouble(int column) const;

 private:
  [[noreturn]] void fail(const char* what) const;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless commit() was called.
class Transaction {
 public:
  explicit Transaction(Connection& connection);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Connection& connection_;
  bool done_ = false;
};

}  // namespace comcl::storage
