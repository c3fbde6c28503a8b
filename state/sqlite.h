#pragma once
// The ledger's SQLite plumbing, internal to kaio_state: one connection that
// owns its statements, statements owned by unique_ptr, a query that resets its
// statement when it goes, and a transaction guard that rolls back unless
// committed. Errors are kaio::Error naming the database file.
#include <sqlite3.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace kaio::state::sql {

class Database;

// One prepared statement: finalized when it goes.
class Statement {
 public:
  Statement(const Database& db, sqlite3_stmt* raw) : db_(&db), stmt_(raw) {}

  void bind(int i, int64_t v) { sqlite3_bind_int64(get(), i, v); }
  void bind(int i, int v) { sqlite3_bind_int64(get(), i, v); }
  void bind(int i, uint64_t v) { sqlite3_bind_int64(get(), i, static_cast<int64_t>(v)); }
  void bind(int i, double v) { sqlite3_bind_double(get(), i, v); }
  void bind(int i, const std::string& v) {
    sqlite3_bind_text(get(), i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void bind(int i, const char* v) { sqlite3_bind_text(get(), i, v, -1, SQLITE_TRANSIENT); }
  void bind(int i, std::string_view v) {
    sqlite3_bind_text(get(), i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  template <typename T>
  void bind(int i, const std::optional<T>& v) {
    if (v)
      bind(i, *v);
    else
      sqlite3_bind_null(get(), i);
  }
  // Binds the arguments to parameters 1, 2, ...
  template <typename... Args>
  void bind_all(const Args&... args) {
    int i = 0;
    (bind(++i, args), ...);
  }

  // True with a row, false when done; throws on an error.
  bool step();
  // Steps a statement without result rows; throws naming `what` unless it is done.
  void run(const std::string& what);
  // Back to the start, keeping the bindings.
  void rewind() { sqlite3_reset(get()); }
  // Back to the start with no bindings.
  void reset() {
    sqlite3_reset(get());
    sqlite3_clear_bindings(get());
  }

  std::string text(int col) const;
  int64_t integer(int col) const { return sqlite3_column_int64(get(), col); }
  double real(int col) const { return sqlite3_column_double(get(), col); }
  bool is_null(int col) const { return sqlite3_column_type(get(), col) == SQLITE_NULL; }
  sqlite3_stmt* get() const { return stmt_.get(); }

 private:
  struct Finalizer {
    void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
  };
  const Database* db_;
  std::unique_ptr<sqlite3_stmt, Finalizer> stmt_;
};

// A cached statement in use, its arguments bound: rewound when the query goes,
// so no statement stays part-stepped (holding its read snapshot) past its user.
class Query {
 public:
  explicit Query(Statement& s) : s_(&s) {}
  Query(Query&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Query& operator=(Query&& o) noexcept {
    if (this != &o) {
      done();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  Query(const Query&) = delete;
  Query& operator=(const Query&) = delete;
  ~Query() { done(); }

  bool step() { return s_->step(); }
  void run(const std::string& what) { s_->run(what); }
  std::string text(int col) const { return s_->text(col); }
  int64_t integer(int col) const { return s_->integer(col); }
  double real(int col) const { return s_->real(col); }
  bool is_null(int col) const { return s_->is_null(col); }

 private:
  void done() {
    if (s_) s_->rewind();
  }
  Statement* s_;
};

// One connection and the statements prepared on it (kept for reuse, finalized
// before the connection closes).
class Database {
 public:
  // Opens (creating) `file` with `flags` for sqlite3_open_v2; throws on failure.
  Database(std::filesystem::path file, int flags);
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  sqlite3* get() const { return db_.get(); }
  const std::filesystem::path& file() const { return file_; }

  // Throws Error(disk_full) when SQLite's last error is SQLITE_FULL, else
  // Error(io), with `what` and SQLite's message.
  [[noreturn]] void fail(const std::string& what) const;
  // Runs SQL text without results; throws Error(io) with the text's start.
  void exec(const char* sql);
  // Runs SQL text without results; false on failure, with SQLite's message
  // in `error` when given.
  bool try_exec(const char* sql, std::string* error = nullptr);
  // A cached statement, reset and with its bindings cleared, `args` bound.
  template <typename... Args>
  Query query(const std::string& sql, const Args&... args) {
    Statement& s = cached(sql);
    s.bind_all(args...);
    return Query(s);
  }
  // Finalizes every cached statement (VACUUM and close want none in progress).
  void forget_statements() { statements_.clear(); }
  // Rows the last INSERT, UPDATE or DELETE changed.
  int64_t changes() const { return sqlite3_changes(get()); }
  // Writes the WAL back into the database and truncates it (as far as readers allow).
  void checkpoint_truncate() {
    sqlite3_wal_checkpoint_v2(get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  }

 private:
  Statement& cached(const std::string& sql);

  struct Closer {
    void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
  };
  std::filesystem::path file_;
  std::unique_ptr<sqlite3, Closer> db_;
  std::unordered_map<std::string, Statement> statements_;  // declared after db_: finalized first
};

// BEGIN IMMEDIATE on construction; ROLLBACK when it goes without commit().
class Transaction {
 public:
  explicit Transaction(Database& db) : db_(db) { db_.exec("BEGIN IMMEDIATE"); }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() {
    if (!committed_) db_.try_exec("ROLLBACK");
  }
  void commit() {
    db_.exec("COMMIT");
    committed_ = true;
  }

 private:
  Database& db_;
  bool committed_ = false;
};

}  // namespace kaio::state::sql
