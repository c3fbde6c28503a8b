#include "state/sqlite.h"

#include "common/error.h"

namespace kaio::state::sql {
namespace {

// Owns the message sqlite3_exec hands back.
struct MessageFreer {
  void operator()(char* p) const { sqlite3_free(p); }
};
using Message = std::unique_ptr<char, MessageFreer>;

}  // namespace

bool Statement::step() {
  int rc = sqlite3_step(get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  db_->fail("step");
}

void Statement::run(const std::string& what) {
  if (sqlite3_step(get()) != SQLITE_DONE) db_->fail(what);
}

std::string Statement::text(int col) const {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(get(), col));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(get(), col))) : std::string();
}

Database::Database(std::filesystem::path file, int flags) : file_(std::move(file)) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(file_.c_str(), &raw, flags, nullptr);
  db_.reset(raw);
  if (rc != SQLITE_OK) fail("open");
}

void Database::fail(const std::string& what) const {
  int rc = sqlite3_errcode(get());
  throw Error(rc == SQLITE_FULL ? ErrorKind::disk_full : ErrorKind::io,
              "ledger " + file_.string() + ": " + what + ": " + sqlite3_errmsg(get()));
}

void Database::exec(const char* sql) {
  std::string error;
  if (try_exec(sql, &error)) return;
  // A COMMIT that finds the disk full is a wait for space, like any write (a
  // checkpoint's COMMIT failing as io stopped kaiod in a disk-full test).
  ErrorKind kind = sqlite3_errcode(get()) == SQLITE_FULL ? ErrorKind::disk_full : ErrorKind::io;
  throw Error(kind, "ledger " + file_.string() + ": " + error + " in: " + std::string(sql).substr(0, 80));
}

bool Database::try_exec(const char* sql, std::string* error) {
  char* raw = nullptr;
  int rc = sqlite3_exec(get(), sql, nullptr, nullptr, error ? &raw : nullptr);
  Message owned(raw);
  if (rc == SQLITE_OK) return true;
  if (error) *error = owned ? owned.get() : "error";
  return false;
}

Statement& Database::cached(const std::string& sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(get(), sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    Statement owned(*this, raw);  // finalized if the prepare failed half-way
    if (rc != SQLITE_OK) fail("prepare " + sql.substr(0, 60));
    it = statements_.emplace(sql, std::move(owned)).first;
  }
  it->second.reset();
  return it->second;
}

}  // namespace kaio::state::sql
