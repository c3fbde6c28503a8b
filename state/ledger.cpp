#include "state/ledger.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "common/error.h"
#include "common/log.h"

namespace kaio::state {
namespace fs = std::filesystem;

// ---------------------------------------------------------------- ids, names

namespace {

// FNV-1a 64 with a SplitMix64 finaliser: stable across compilers and runs.
uint64_t stable_hash(std::string_view a, std::string_view b) {
  uint64_t h = 1469598103934665603ull;
  auto feed = [&](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  };
  feed(a);
  feed(std::string_view("\0", 1));
  feed(b);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h;
}

std::string hex16(uint64_t v) {
  std::array<char, 17> buf{};
  std::snprintf(buf.data(), buf.size(), "%016llx", static_cast<unsigned long long>(v));
  return std::string(buf.data(), 16);
}

constexpr std::array<std::string_view, 7> kFileStateNames{"pending", "downloading", "downloaded", "extracting",
                                                          "decoded", "done",        "failed"};
constexpr std::array<std::string_view, 5> kClipStateNames{"ready", "consumed", "committed", "deleted", "failed"};

// The 64 bits of a 16-hex-digit id (what file_id and clip_id make), as SQLite's
// signed integer; nullopt for any other text (such rows are never compacted).
std::optional<int64_t> key_of(std::string_view id) {
  if (id.size() != 16) return std::nullopt;
  uint64_t v = 0;
  for (char c : id) {
    int d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else
      return std::nullopt;
    v = (v << 4) | static_cast<uint64_t>(d);
  }
  return static_cast<int64_t>(v);
}

// SQL kaio_key(text): key_of, NULL when it has none. Registered on the ledger's
// own connection only; the `clips` view does not need it.
void sql_key_of(sqlite3_context* ctx, int, sqlite3_value** argv) {
  auto* p = reinterpret_cast<const char*>(sqlite3_value_text(argv[0]));
  auto key = p ? key_of(std::string_view(p, static_cast<size_t>(sqlite3_value_bytes(argv[0])))) : std::nullopt;
  if (key)
    sqlite3_result_int64(ctx, *key);
  else
    sqlite3_result_null(ctx);
}

// Trained, covered and deleted clips whose ids fit a compact row.
constexpr const char* kCompactable =
    "state = 'deleted' AND plan_epoch IS NOT NULL AND plan_chunk IS NOT NULL AND kaio_key(id) IS NOT NULL AND "
    "kaio_key(file_id) IS NOT NULL";

int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

FileId file_id(std::string_view repo, std::string_view path) {
  return hex16(stable_hash(repo, path));
}

ClipId clip_id(std::string_view repo, std::string_view path, std::string_view member) {
  std::string key(path);
  key += '\n';
  key += member;
  return hex16(stable_hash(repo, key));
}

std::string_view to_string(FileState s) {
  return kFileStateNames.at(static_cast<size_t>(s));
}
std::string_view to_string(ClipState s) {
  return kClipStateNames.at(static_cast<size_t>(s));
}

FileState parse_file_state(std::string_view s) {
  for (size_t i = 0; i < kFileStateNames.size(); ++i)
    if (kFileStateNames[i] == s) return static_cast<FileState>(i);
  throw Error(ErrorKind::usage, "unknown file state '" + std::string(s) + "'");
}

ClipState parse_clip_state(std::string_view s) {
  for (size_t i = 0; i < kClipStateNames.size(); ++i)
    if (kClipStateNames[i] == s) return static_cast<ClipState>(i);
  throw Error(ErrorKind::usage, "unknown clip state '" + std::string(s) + "'");
}

// ---------------------------------------------------------------- SQLite plumbing

namespace {

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtFinalizer {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Owns the lock file descriptor; closing it drops the flock.
struct FdCloser {
  void operator()(int* fd) const {
    ::close(*fd);
    delete fd;
  }
};
using FdPtr = std::unique_ptr<int, FdCloser>;

// Schema migrations: entry i brings user_version i to i + 1.
const std::vector<std::string>& migrations() {
  static const std::vector<std::string> list{
      R"sql(
CREATE TABLE source(id INTEGER PRIMARY KEY CHECK (id = 1), endpoint TEXT NOT NULL, repo TEXT NOT NULL,
                    revision TEXT NOT NULL, commit_sha TEXT NOT NULL, selection TEXT NOT NULL);
CREATE TABLE files(id TEXT PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
                   git_oid TEXT NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE file_states(file_id TEXT NOT NULL REFERENCES files(id), epoch INTEGER NOT NULL,
                         state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
                         local_path TEXT NOT NULL DEFAULT '', updated INTEGER NOT NULL,
                         PRIMARY KEY (file_id, epoch));
CREATE TABLE clips(id TEXT PRIMARY KEY, file_id TEXT NOT NULL, member TEXT NOT NULL, member_index INTEGER NOT NULL,
                   caption TEXT NOT NULL, windows INTEGER NOT NULL, shard_path TEXT NOT NULL,
                   shard_bytes INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '');
CREATE INDEX clips_by_state ON clips(state);
CREATE INDEX clips_by_file ON clips(file_id, member_index);
CREATE TABLE position(id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL, step INTEGER NOT NULL,
                      samples INTEGER NOT NULL, cursor TEXT NOT NULL);
CREATE TABLE checkpoints(path TEXT PRIMARY KEY, step INTEGER NOT NULL, bytes INTEGER NOT NULL,
                         created INTEGER NOT NULL, cursor TEXT NOT NULL);
CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
)sql",
      // v2: clips remember the plan chunk they were trained in (retention), and the pause flag.
      R"sql(
ALTER TABLE clips ADD COLUMN plan_epoch INTEGER;
ALTER TABLE clips ADD COLUMN plan_chunk INTEGER;
CREATE INDEX clips_by_chunk ON clips(plan_epoch, plan_chunk);
CREATE TABLE pause(id INTEGER PRIMARY KEY CHECK (id = 1), paused INTEGER NOT NULL, reason TEXT NOT NULL,
                   since INTEGER NOT NULL);
)sql",
      // v3: the ledger stays inside its allowance. Clips trained, covered by a
      // durable checkpoint and deleted move to compact rows keyed by the 64 bits
      // of their ids (about 60 bytes a clip with the index, against 600 and more
      // with caption, member, shard path and reason). `clips` becomes a view over
      // both, so readers of the file (sqlite3 -readonly) see every clip as before.
      R"sql(
ALTER TABLE clips RENAME TO live_clips;
CREATE TABLE done_clips(key INTEGER PRIMARY KEY, file_key INTEGER NOT NULL, member_index INTEGER NOT NULL,
                        windows INTEGER NOT NULL, plan_epoch INTEGER NOT NULL, plan_chunk INTEGER NOT NULL);
CREATE INDEX done_clips_by_file ON done_clips(file_key, member_index);
CREATE VIEW clips(id, file_id, member, member_index, caption, windows, shard_path, shard_bytes, state, reason,
                  plan_epoch, plan_chunk) AS
  SELECT id, file_id, member, member_index, caption, windows, shard_path, shard_bytes, state, reason, plan_epoch,
         plan_chunk FROM live_clips
  UNION ALL
  SELECT printf('%016x', key), printf('%016x', file_key), '#' || member_index, member_index, '', windows, '', 0,
         'deleted', 'covered by a checkpoint', plan_epoch, plan_chunk FROM done_clips;
)sql",
  };
  return list;
}

}  // namespace

struct Ledger::Impl {
  fs::path dir;
  fs::path db_file;
  LedgerOptions options;
  FdPtr lock;
  DbPtr db;
  std::recursive_mutex mu;
  int tx_depth = 0;
  std::unordered_map<std::string, StmtPtr> statements;

  [[noreturn]] void fail(const std::string& what) const {
    int rc = sqlite3_errcode(db.get());
    throw Error(rc == SQLITE_FULL ? ErrorKind::disk_full : ErrorKind::io,
                "ledger " + db_file.string() + ": " + what + ": " + sqlite3_errmsg(db.get()));
  }

  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db.get(), sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::unique_ptr<char, decltype(&sqlite3_free)> owned(err, &sqlite3_free);
      throw Error(ErrorKind::io, "ledger " + db_file.string() + ": " + (owned ? owned.get() : "error") +
                                     " in: " + std::string(sql).substr(0, 80));
    }
  }

  // A cached statement, reset and with its bindings cleared.
  sqlite3_stmt* prepare(const std::string& sql) {
    auto it = statements.find(sql);
    if (it == statements.end()) {
      sqlite3_stmt* raw = nullptr;
      if (sqlite3_prepare_v3(db.get(), sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) != SQLITE_OK)
        fail("prepare " + sql.substr(0, 60));
      it = statements.emplace(sql, StmtPtr(raw)).first;
    }
    sqlite3_reset(it->second.get());
    sqlite3_clear_bindings(it->second.get());
    return it->second.get();
  }

  void bind(sqlite3_stmt* s, int i, int64_t v) { sqlite3_bind_int64(s, i, v); }
  void bind(sqlite3_stmt* s, int i, int v) { sqlite3_bind_int64(s, i, v); }
  void bind(sqlite3_stmt* s, int i, uint64_t v) { sqlite3_bind_int64(s, i, static_cast<int64_t>(v)); }
  void bind(sqlite3_stmt* s, int i, const std::string& v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void bind(sqlite3_stmt* s, int i, const char* v) { sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT); }
  void bind(sqlite3_stmt* s, int i, std::string_view v) {
    sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  template <typename T>
  void bind(sqlite3_stmt* s, int i, const std::optional<T>& v) {
    if (v)
      bind(s, i, *v);
    else
      sqlite3_bind_null(s, i);
  }

  template <typename... Args>
  sqlite3_stmt* query(const std::string& sql, const Args&... args) {
    sqlite3_stmt* s = prepare(sql);
    int i = 0;
    (bind(s, ++i, args), ...);
    return s;
  }

  // Runs a statement without result rows.
  template <typename... Args>
  void run(const std::string& sql, const Args&... args) {
    sqlite3_stmt* s = query(sql, args...);
    if (sqlite3_step(s) != SQLITE_DONE) fail("step " + sql.substr(0, 60));
    sqlite3_reset(s);
  }

  // True when the query yields a row.
  template <typename... Args>
  bool exists(const std::string& sql, const Args&... args) {
    sqlite3_stmt* s = query(sql, args...);
    bool found = step(s);
    sqlite3_reset(s);
    return found;
  }

  // Steps a query: true with a row, false when done.
  bool step(sqlite3_stmt* s) {
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail("step");
  }

  static std::string text(sqlite3_stmt* s, int col) {
    auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s, col));
    return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(s, col))) : std::string();
  }
  static int64_t integer(sqlite3_stmt* s, int col) { return sqlite3_column_int64(s, col); }

  int user_version() {
    sqlite3_stmt* s = prepare("PRAGMA user_version");
    step(s);
    int v = static_cast<int>(integer(s, 0));
    sqlite3_reset(s);
    return v;
  }

  void migrate() {
    int version = user_version();
    int latest = static_cast<int>(migrations().size());
    if (version > latest)
      throw Error(ErrorKind::corrupt, "ledger " + db_file.string() + " has schema version " + std::to_string(version) +
                                          ", newer than this kaiod understands (" + std::to_string(latest) + ")");
    for (; version < latest; ++version) {
      exec("BEGIN IMMEDIATE");
      try {
        exec(migrations()[static_cast<size_t>(version)].c_str());
        exec(("PRAGMA user_version = " + std::to_string(version + 1)).c_str());
        exec("COMMIT");
      } catch (...) {
        sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
      }
      spdlog::info("ledger {}: migrated schema to version {}", db_file.string(), version + 1);
    }
  }

  // Keeps the WAL inside its allowance: checkpoint and truncate once it grew past the limit.
  void bound_wal() {
    fs::path wal = db_file;
    wal += "-wal";
    struct stat st {};
    if (::stat(wal.c_str(), &st) != 0) return;
    if (static_cast<uint64_t>(st.st_size) <= options.wal_limit_bytes) return;
    // Another reader may keep it from truncating fully; the next commit retries.
    sqlite3_wal_checkpoint_v2(db.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  }

  // Runs a single write outside any caller transaction as its own transaction.
  template <typename F>
  void write(F&& f) {
    std::lock_guard lock(mu);
    if (tx_depth > 0) {
      f();
      return;
    }
    ++tx_depth;
    try {
      exec("BEGIN IMMEDIATE");
      f();
      exec("COMMIT");
    } catch (...) {
      --tx_depth;
      sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
    --tx_depth;
    bound_wal();
  }

  int64_t pragma_int(const char* name) {
    sqlite3_stmt* s = prepare(std::string("PRAGMA ") + name);
    int64_t v = step(s) ? integer(s, 0) : 0;
    sqlite3_reset(s);
    return v;
  }

  // The epoch of the durable position (saved with each checkpoint).
  int durable_epoch() {
    sqlite3_stmt* s = prepare("SELECT epoch FROM position WHERE id = 1");
    int e = step(s) ? static_cast<int>(integer(s, 0)) : 0;
    sqlite3_reset(s);
    return e;
  }

  // Epoch below which old rows are already pruned (once per epoch is enough).
  int pruned_below = -1;

  // The row work of compact_after_checkpoint; call inside write().
  void compact_rows(int epoch, CompactReport& r) {
    run(std::string("INSERT OR REPLACE INTO done_clips(key, file_key, member_index, windows, plan_epoch, plan_chunk) "
                    "SELECT kaio_key(id), kaio_key(file_id), member_index, windows, plan_epoch, plan_chunk "
                    "FROM live_clips WHERE ") +
        kCompactable);
    r.clips_compacted = sqlite3_changes(db.get());
    run(std::string("DELETE FROM live_clips WHERE ") + kCompactable);
    // Deleted clips that stay live (never trained, or ids from elsewhere) lose their texts.
    run("UPDATE live_clips SET caption = '', shard_path = '' WHERE state = 'deleted' AND (caption != '' OR shard_path "
        "!= '')");
    if (epoch > pruned_below) {
      run("DELETE FROM done_clips WHERE plan_epoch < ?", epoch);
      r.clips_pruned = sqlite3_changes(db.get());
      run("DELETE FROM live_clips WHERE state = 'deleted' AND plan_epoch < ?", epoch);
      r.clips_pruned += sqlite3_changes(db.get());
      run("DELETE FROM file_states WHERE epoch < ?", epoch);
      r.file_states_pruned = sqlite3_changes(db.get());
    }
  }

  FileStatus read_file_status(sqlite3_stmt* s) {
    FileStatus st;
    st.file.id = text(s, 0);
    st.file.path = text(s, 1);
    st.file.size = static_cast<uint64_t>(integer(s, 2));
    st.file.git_oid = text(s, 3);
    st.file.sha256 = text(s, 4);
    st.epoch = static_cast<int>(integer(s, 5));
    st.state = parse_file_state(text(s, 6));
    st.reason = text(s, 7);
    st.attempts = static_cast<int>(integer(s, 8));
    st.local_path = text(s, 9);
    return st;
  }

  ClipRecord read_clip(sqlite3_stmt* s) {
    ClipRecord c;
    c.id = text(s, 0);
    c.file_id = text(s, 1);
    c.member = text(s, 2);
    c.member_index = integer(s, 3);
    c.caption = text(s, 4);
    c.windows = integer(s, 5);
    c.shard_path = text(s, 6);
    c.shard_bytes = static_cast<uint64_t>(integer(s, 7));
    c.state = parse_clip_state(text(s, 8));
    c.reason = text(s, 9);
    if (sqlite3_column_type(s, 10) != SQLITE_NULL) c.plan_epoch = static_cast<int>(integer(s, 10));
    if (sqlite3_column_type(s, 11) != SQLITE_NULL) c.plan_chunk = integer(s, 11);
    c.repo_path = text(s, 12);
    c.compacted = integer(s, 13) != 0;
    return c;
  }

  std::vector<ClipRecord> read_clips(sqlite3_stmt* s) {
    std::vector<ClipRecord> out;
    while (step(s)) out.push_back(read_clip(s));
    sqlite3_reset(s);
    return out;
  }
};

namespace {

constexpr const char* kFileStatusSelect =
    "SELECT f.id, f.path, f.size, f.git_oid, f.sha256, s.epoch, s.state, s.reason, s.attempts, s.local_path "
    "FROM file_states s JOIN files f ON f.id = s.file_id ";
// A clip from either table, in read_clip's column order; append a WHERE clause.
constexpr const char* kLiveClips =
    "SELECT id, file_id, member, member_index, caption, windows, shard_path, shard_bytes, state, reason, plan_epoch, "
    "plan_chunk, 0 AS compacted FROM live_clips ";
constexpr const char* kDoneClips =
    "SELECT printf('%016x', key) AS id, printf('%016x', file_key) AS file_id, '#' || member_index AS member, "
    "member_index, '' AS caption, windows, '' AS shard_path, 0 AS shard_bytes, 'deleted' AS state, "
    "'covered by a checkpoint' AS reason, plan_epoch, plan_chunk, 1 AS compacted FROM done_clips ";
constexpr const char* kClipOrder = " ORDER BY f.path, c.member_index, c.id";

// Clips from `source` (kLiveClips and/or kDoneClips with their conditions) with
// their file's path.
std::string clip_select(const std::string& source) {
  return "SELECT c.id, c.file_id, c.member, c.member_index, c.caption, c.windows, c.shard_path, c.shard_bytes, "
         "c.state, c.reason, c.plan_epoch, c.plan_chunk, COALESCE(f.path, ''), c.compacted FROM (" +
         source + ") c LEFT JOIN files f ON f.id = c.file_id ";
}

// Takes the exclusive lock on state_dir/lock, or explains who holds it.
FdPtr lock_state_dir(const fs::path& dir) {
  fs::path lock_path = dir / Ledger::kLockName;
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("open lock file", lock_path.string());
  FdPtr lock(new int(fd));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) throw_errno("flock", lock_path.string());
    std::array<char, 32> buf{};
    ssize_t n = ::pread(fd, buf.data(), buf.size() - 1, 0);
    std::string pid = n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : "unknown";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    throw Error(ErrorKind::io, "another kaiod (pid " + pid + ") is using " + dir.string());
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    throw_errno("write pid to", lock_path.string());
  return lock;
}

}  // namespace

// ---------------------------------------------------------------- open, transactions

Ledger::Ledger(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Ledger::Ledger(Ledger&&) noexcept = default;
Ledger& Ledger::operator=(Ledger&&) noexcept = default;
Ledger::~Ledger() {
  if (impl_ && impl_->db) {
    impl_->statements.clear();
    sqlite3_wal_checkpoint_v2(impl_->db.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  }
}

Ledger Ledger::open(const fs::path& state_dir, const LedgerOptions& options) {
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) throw Error(ErrorKind::io, "create state folder " + state_dir.string() + ": " + ec.message());
  auto impl = std::make_unique<Impl>();
  impl->dir = state_dir;
  impl->db_file = state_dir / kDbName;
  impl->options = options;
  impl->lock = lock_state_dir(state_dir);

  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(impl->db_file.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  impl->db.reset(raw);
  if (rc != SQLITE_OK) impl->fail("open");
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  if (sqlite3_create_function_v2(raw, "kaio_key", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr, &sql_key_of, nullptr,
                                 nullptr, nullptr) != SQLITE_OK)
    impl->fail("register kaio_key");
  // Freed pages go back to the filesystem on `PRAGMA incremental_vacuum`. Takes
  // effect on a new database (before its first table); an older one is switched
  // below with a one-time VACUUM.
  impl->exec("PRAGMA auto_vacuum = INCREMENTAL");
  impl->exec("PRAGMA journal_mode = WAL");
  impl->exec("PRAGMA synchronous = FULL");
  impl->exec("PRAGMA foreign_keys = ON");
  impl->migrate();
  Ledger ledger(std::move(impl));
  if (ledger.impl_->pragma_int("auto_vacuum") != 2) ledger.upgrade_to_incremental_vacuum();
  spdlog::info("ledger {}: open, schema version {}, {} bytes", ledger.impl_->db_file.string(), kSchemaVersion,
               ledger.file_bytes());
  return ledger;
}

fs::path Ledger::db_path() const {
  return impl_->db_file;
}

uint64_t Ledger::disk_bytes() const {
  uint64_t total = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    fs::path p = impl_->db_file;
    p += suffix;
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

uint64_t Ledger::file_bytes() const {
  uint64_t total = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    fs::path p = impl_->db_file;
    p += suffix;
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_size);
  }
  return total;
}

// A database from before schema 3 grew without bound and has auto_vacuum off:
// compact its rows first (so the copy is small), then VACUUM once to switch it.
void Ledger::upgrade_to_incremental_vacuum() {
  std::lock_guard lock(impl_->mu);
  uint64_t before = file_bytes();
  CompactReport r;
  int epoch = impl_->durable_epoch();
  impl_->write([&] { impl_->compact_rows(epoch, r); });
  impl_->pruned_below = epoch;
  impl_->statements.clear();  // VACUUM wants no statement in progress
  char* err = nullptr;
  if (sqlite3_exec(impl_->db.get(), "PRAGMA auto_vacuum = INCREMENTAL; VACUUM", nullptr, nullptr, &err) != SQLITE_OK) {
    std::unique_ptr<char, decltype(&sqlite3_free)> owned(err, &sqlite3_free);
    spdlog::warn("ledger {}: VACUUM to incremental auto-vacuum failed ({}); freed pages are reused but not returned",
                 impl_->db_file.string(), owned ? owned.get() : "error");
  }
  sqlite3_wal_checkpoint_v2(impl_->db.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  spdlog::info(
      "ledger {}: upgraded to compact rows and incremental auto-vacuum: {} clips compacted, {} pruned, {} -> {} bytes",
      impl_->db_file.string(), r.clips_compacted, r.clips_pruned, before, file_bytes());
}

int Ledger::schema_version() {
  std::lock_guard lock(impl_->mu);
  return impl_->user_version();
}

void Ledger::transaction(const std::function<void()>& body) {
  impl_->write(body);
}

// ---------------------------------------------------------------- source

std::optional<SourceRecord> Ledger::source() {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT endpoint, repo, revision, commit_sha, selection FROM source WHERE id = 1");
  std::optional<SourceRecord> out;
  if (impl_->step(s))
    out = SourceRecord{Impl::text(s, 0), Impl::text(s, 1), Impl::text(s, 2), Impl::text(s, 3), Impl::text(s, 4)};
  sqlite3_reset(s);
  return out;
}

SourceRecord Ledger::pin_source(const SourceRecord& wanted) {
  SourceRecord result = wanted;
  impl_->write([&] {
    auto stored = source();
    if (!stored) {
      impl_->run("INSERT INTO source(id, endpoint, repo, revision, commit_sha, selection) VALUES (1, ?, ?, ?, ?, ?)",
                 wanted.endpoint, wanted.repo, wanted.revision, wanted.commit_sha, wanted.selection_json);
      spdlog::info("ledger: pinned {} at {} (revision {})", wanted.repo, wanted.commit_sha, wanted.revision);
      return;
    }
    if (stored->repo != wanted.repo)
      throw Error(ErrorKind::config, "state folder " + impl_->dir.string() + " belongs to repo " + stored->repo +
                                         ", but source.repo is " + wanted.repo + "; use a fresh storage.state_dir");
    result = *stored;
  });
  return result;
}

// ---------------------------------------------------------------- files

void Ledger::upsert_files(const std::string& repo, std::vector<FileRecord> files) {
  impl_->write([&] {
    for (auto& f : files) {
      if (f.id.empty()) f.id = file_id(repo, f.path);
      impl_->run(
          "INSERT INTO files(id, path, size, git_oid, sha256) VALUES (?, ?, ?, ?, ?) "
          "ON CONFLICT(id) DO UPDATE SET size = excluded.size, git_oid = excluded.git_oid, sha256 = excluded.sha256",
          f.id, f.path, f.size, f.git_oid, f.sha256);
    }
  });
}

std::vector<FileRecord> Ledger::files() {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT id, path, size, git_oid, sha256 FROM files ORDER BY path");
  std::vector<FileRecord> out;
  while (impl_->step(s))
    out.push_back({Impl::text(s, 0), Impl::text(s, 1), static_cast<uint64_t>(Impl::integer(s, 2)), Impl::text(s, 3),
                   Impl::text(s, 4)});
  sqlite3_reset(s);
  return out;
}

std::optional<FileRecord> Ledger::file(const FileId& id) {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT id, path, size, git_oid, sha256 FROM files WHERE id = ?", id);
  std::optional<FileRecord> out;
  if (impl_->step(s))
    out = FileRecord{Impl::text(s, 0), Impl::text(s, 1), static_cast<uint64_t>(Impl::integer(s, 2)), Impl::text(s, 3),
                     Impl::text(s, 4)};
  sqlite3_reset(s);
  return out;
}

// ---------------------------------------------------------------- file states

namespace {

bool file_transition_allowed(FileState from, FileState to) {
  if (to == FileState::pending || to == FileState::failed) return true;
  if (from == FileState::failed || from == FileState::done) return false;
  return static_cast<int>(to) >= static_cast<int>(from);  // forward; streaming may skip `downloaded`
}

}  // namespace

void Ledger::set_file_state(const FileId& id, int epoch, FileState state, const std::string& reason) {
  impl_->write([&] {
    auto current = file_status(id, epoch);
    if (!current) {
      if (!file(id)) throw Error(ErrorKind::internal, "ledger: unknown file id " + id);
      impl_->run("INSERT INTO file_states(file_id, epoch, state, reason, attempts, updated) VALUES (?, ?, ?, ?, ?, ?)",
                 id, epoch, to_string(state), reason, state == FileState::failed ? 1 : 0, now_unix());
      return;
    }
    if (!file_transition_allowed(current->state, state))
      throw Error(ErrorKind::internal, "ledger: file " + current->file.path + " (epoch " + std::to_string(epoch) +
                                           ") cannot go from " + std::string(to_string(current->state)) + " to " +
                                           std::string(to_string(state)));
    impl_->run(
        "UPDATE file_states SET state = ?, reason = ?, attempts = attempts + ?, updated = ? "
        "WHERE file_id = ? AND epoch = ?",
        to_string(state), reason, state == FileState::failed ? 1 : 0, now_unix(), id, epoch);
  });
}

void Ledger::set_file_local_path(const FileId& id, int epoch, const fs::path& local_path) {
  impl_->write([&] {
    if (!file_status(id, epoch)) set_file_state(id, epoch, FileState::pending);
    impl_->run("UPDATE file_states SET local_path = ? WHERE file_id = ? AND epoch = ?", local_path.string(), id, epoch);
  });
}

std::optional<FileStatus> Ledger::file_status(const FileId& id, int epoch) {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query(std::string(kFileStatusSelect) + "WHERE s.file_id = ? AND s.epoch = ?", id, epoch);
  std::optional<FileStatus> out;
  if (impl_->step(s)) out = impl_->read_file_status(s);
  sqlite3_reset(s);
  return out;
}

std::vector<FileStatus> Ledger::list_files(int epoch, std::optional<FileState> only) {
  std::lock_guard lock(impl_->mu);
  auto* s = only ? impl_->query(std::string(kFileStatusSelect) + "WHERE s.epoch = ? AND s.state = ? ORDER BY f.path",
                                epoch, to_string(*only))
                 : impl_->query(std::string(kFileStatusSelect) + "WHERE s.epoch = ? ORDER BY f.path", epoch);
  std::vector<FileStatus> out;
  while (impl_->step(s)) out.push_back(impl_->read_file_status(s));
  sqlite3_reset(s);
  return out;
}

std::map<FileState, int64_t> Ledger::file_counts(int epoch) {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT state, COUNT(*) FROM file_states WHERE epoch = ? GROUP BY state", epoch);
  std::map<FileState, int64_t> out;
  while (impl_->step(s)) out[parse_file_state(Impl::text(s, 0))] = Impl::integer(s, 1);
  sqlite3_reset(s);
  return out;
}

// ---------------------------------------------------------------- clips

void Ledger::add_clips(const std::string& repo, std::vector<ClipRecord> clips) {
  impl_->write([&] {
    for (auto& c : clips) {
      if (c.id.empty()) {
        if (c.repo_path.empty())
          throw Error(ErrorKind::internal, "ledger: clip " + c.member + " has no id nor repo path");
        c.id = clip_id(repo, c.repo_path, c.member);
      }
      impl_->run(
          "INSERT INTO live_clips(id, file_id, member, member_index, caption, windows, shard_path, shard_bytes, state, "
          "reason, plan_epoch, plan_chunk) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL) "
          "ON CONFLICT(id) DO UPDATE SET file_id = excluded.file_id, member = excluded.member, "
          "member_index = excluded.member_index, caption = excluded.caption, windows = excluded.windows, "
          "shard_path = excluded.shard_path, shard_bytes = excluded.shard_bytes, state = excluded.state, "
          "reason = excluded.reason, plan_epoch = NULL, plan_chunk = NULL",
          c.id, c.file_id, c.member, c.member_index, c.caption, c.windows, c.shard_path.string(), c.shard_bytes,
          to_string(c.state), c.reason);
      // Decoded again (a later epoch, or a rollback): the live row replaces any compact one.
      if (auto key = key_of(c.id)) impl_->run("DELETE FROM done_clips WHERE key = ?", *key);
    }
  });
}

void Ledger::set_clip_state(const ClipId& id, ClipState state, const std::string& reason) {
  set_clips_state({id}, state, reason);
}

void Ledger::set_clips_state(const std::vector<ClipId>& ids, ClipState state, const std::string& reason) {
  impl_->write([&] {
    for (const auto& id : ids) {
      impl_->run("UPDATE live_clips SET state = ?, reason = ? WHERE id = ?", to_string(state), reason, id);
      if (sqlite3_changes(impl_->db.get()) > 0) continue;
      auto key = key_of(id);
      if (key && impl_->exists("SELECT 1 FROM done_clips WHERE key = ?", *key)) {
        if (state == ClipState::deleted) continue;  // it is deleted already
        // Not expected (a compact row's clip is trained and gone), but kept
        // honest: the clip comes back as a live row, without its texts.
        impl_->run(
            "INSERT INTO live_clips(id, file_id, member, member_index, caption, windows, shard_path, shard_bytes, "
            "state, "
            "reason, plan_epoch, plan_chunk) SELECT printf('%016x', key), printf('%016x', file_key), '#' || "
            "member_index, "
            "member_index, '', windows, '', 0, 'deleted', '', plan_epoch, plan_chunk FROM done_clips WHERE key = ?",
            *key);
        impl_->run("DELETE FROM done_clips WHERE key = ?", *key);
        impl_->run("UPDATE live_clips SET state = ?, reason = ? WHERE id = ?", to_string(state), reason, id);
        continue;
      }
      throw Error(ErrorKind::internal, "ledger: unknown clip id " + id);
    }
  });
}

void Ledger::assign_chunk(const std::vector<ClipId>& ids, int epoch, int64_t chunk) {
  impl_->write([&] {
    for (const auto& id : ids) {
      impl_->run("UPDATE live_clips SET plan_epoch = ?, plan_chunk = ? WHERE id = ?", epoch, chunk, id);
      if (sqlite3_changes(impl_->db.get()) > 0) continue;
      if (auto key = key_of(id))
        impl_->run("UPDATE done_clips SET plan_epoch = ?, plan_chunk = ? WHERE key = ?", epoch, chunk, *key);
    }
  });
}

std::optional<ClipRecord> Ledger::clip(const ClipId& id) {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query(clip_select(std::string(kLiveClips) + "WHERE id = ?"), id);
  std::optional<ClipRecord> out;
  if (impl_->step(s)) out = impl_->read_clip(s);
  sqlite3_reset(s);
  if (out) return out;
  auto key = key_of(id);
  if (!key) return out;
  s = impl_->query(clip_select(std::string(kDoneClips) + "WHERE key = ?"), *key);
  if (impl_->step(s)) out = impl_->read_clip(s);
  sqlite3_reset(s);
  return out;
}

std::vector<ClipRecord> Ledger::list_clips(std::optional<ClipState> only, size_t limit) {
  std::lock_guard lock(impl_->mu);
  int64_t lim = limit == 0 ? -1 : static_cast<int64_t>(limit);
  if (!only)
    return impl_->read_clips(
        impl_->query(clip_select(std::string(kLiveClips) + "UNION ALL " + kDoneClips) + kClipOrder + " LIMIT ?", lim));
  if (*only != ClipState::deleted)
    return impl_->read_clips(impl_->query(
        clip_select(std::string(kLiveClips) + "WHERE state = ?") + kClipOrder + " LIMIT ?", to_string(*only), lim));
  return impl_->read_clips(
      impl_->query(clip_select(std::string(kLiveClips) + "WHERE state = 'deleted' UNION ALL " + kDoneClips) +
                       kClipOrder + " LIMIT ?",
                   lim));
}

std::vector<ClipRecord> Ledger::clips_of_file(const FileId& id) {
  std::lock_guard lock(impl_->mu);
  auto key = key_of(id);
  if (!key)
    return impl_->read_clips(impl_->query(clip_select(std::string(kLiveClips) + "WHERE file_id = ?") + kClipOrder, id));
  return impl_->read_clips(impl_->query(
      clip_select(std::string(kLiveClips) + "WHERE file_id = ? UNION ALL " + kDoneClips + "WHERE file_key = ?") +
          kClipOrder,
      id, *key));
}

std::map<ClipState, int64_t> Ledger::clip_counts() {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT state, COUNT(*) FROM live_clips GROUP BY state");
  std::map<ClipState, int64_t> out;
  while (impl_->step(s)) out[parse_clip_state(Impl::text(s, 0))] = Impl::integer(s, 1);
  sqlite3_reset(s);
  s = impl_->query("SELECT COUNT(*) FROM done_clips");
  if (impl_->step(s) && Impl::integer(s, 0) > 0) out[ClipState::deleted] += Impl::integer(s, 0);
  sqlite3_reset(s);
  return out;
}

std::vector<ClipRecord> Ledger::clips_before(int epoch, int64_t chunk) {
  std::lock_guard lock(impl_->mu);
  return impl_->read_clips(
      impl_->query(clip_select(std::string(kLiveClips) +
                               "WHERE state IN ('ready', 'consumed', 'committed') AND plan_epoch IS NOT NULL "
                               "AND (plan_epoch < ? OR (plan_epoch = ? AND plan_chunk < ?))") +
                       kClipOrder,
                   epoch, epoch, chunk));
}

// ---------------------------------------------------------------- position, checkpoints, pause, counters

void Ledger::save_position(const TrainingPosition& p) {
  impl_->write([&] {
    impl_->run(
        "INSERT INTO position(id, epoch, step, samples, cursor) VALUES (1, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "epoch = excluded.epoch, step = excluded.step, samples = excluded.samples, cursor = excluded.cursor",
        p.epoch, p.step, p.samples, p.cursor);
  });
}

TrainingPosition Ledger::position() {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT epoch, step, samples, cursor FROM position WHERE id = 1");
  TrainingPosition p;
  if (impl_->step(s))
    p = {static_cast<int>(Impl::integer(s, 0)), Impl::integer(s, 1), Impl::integer(s, 2), Impl::text(s, 3)};
  sqlite3_reset(s);
  return p;
}

void Ledger::add_checkpoint(const CheckpointRecord& c) {
  impl_->write([&] {
    impl_->run(
        "INSERT INTO checkpoints(path, step, bytes, created, cursor) VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) DO "
        "UPDATE "
        "SET step = excluded.step, bytes = excluded.bytes, created = excluded.created, cursor = excluded.cursor",
        c.path.string(), c.step, c.bytes, c.created_unix, c.cursor);
  });
}

void Ledger::remove_checkpoint(const fs::path& path) {
  impl_->write([&] { impl_->run("DELETE FROM checkpoints WHERE path = ?", path.string()); });
}

std::vector<CheckpointRecord> Ledger::checkpoints() {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT step, path, bytes, created, cursor FROM checkpoints ORDER BY step, created");
  std::vector<CheckpointRecord> out;
  while (impl_->step(s))
    out.push_back({Impl::integer(s, 0), Impl::text(s, 1), static_cast<uint64_t>(Impl::integer(s, 2)),
                   Impl::integer(s, 3), Impl::text(s, 4)});
  sqlite3_reset(s);
  return out;
}

void Ledger::set_paused(bool paused, const std::string& reason) {
  impl_->write([&] {
    impl_->run(
        "INSERT INTO pause(id, paused, reason, since) VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
        "paused = excluded.paused, reason = excluded.reason, since = excluded.since",
        paused ? 1 : 0, reason, now_unix());
  });
}

PauseState Ledger::pause_state() {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT paused, reason, since FROM pause WHERE id = 1");
  PauseState p;
  if (impl_->step(s)) p = {Impl::integer(s, 0) != 0, Impl::text(s, 1), Impl::integer(s, 2)};
  sqlite3_reset(s);
  return p;
}

void Ledger::add_counter(const std::string& name, int64_t delta) {
  impl_->write([&] {
    impl_->run("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
               name, delta, delta);
  });
}

int64_t Ledger::counter(const std::string& name) {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT value FROM counters WHERE name = ?", name);
  int64_t v = impl_->step(s) ? Impl::integer(s, 0) : 0;
  sqlite3_reset(s);
  return v;
}

std::map<std::string, int64_t> Ledger::counters() {
  std::lock_guard lock(impl_->mu);
  auto* s = impl_->query("SELECT name, value FROM counters ORDER BY name");
  std::map<std::string, int64_t> out;
  while (impl_->step(s)) out[Impl::text(s, 0)] = Impl::integer(s, 1);
  sqlite3_reset(s);
  return out;
}

// ---------------------------------------------------------------- recovery support

KnownPaths Ledger::known_paths() {
  std::lock_guard lock(impl_->mu);
  KnownPaths out;
  auto* s = impl_->query("SELECT id, shard_path FROM live_clips WHERE state IN ('ready', 'consumed', 'committed')");
  while (impl_->step(s)) out.shards.push_back({Impl::text(s, 0), Impl::text(s, 1)});
  sqlite3_reset(s);
  s = impl_->query("SELECT path FROM checkpoints");
  while (impl_->step(s)) out.checkpoints.emplace_back(Impl::text(s, 0));
  sqlite3_reset(s);
  s = impl_->query(
      "SELECT DISTINCT local_path FROM file_states WHERE local_path != '' "
      "AND state IN ('pending', 'downloading', 'downloaded', 'extracting')");
  while (impl_->step(s)) out.downloads.emplace_back(Impl::text(s, 0));
  sqlite3_reset(s);
  return out;
}

CompactReport Ledger::compact_after_checkpoint() {
  std::lock_guard lock(impl_->mu);
  if (impl_->tx_depth > 0) throw Error(ErrorKind::internal, "ledger: compact_after_checkpoint inside a transaction");
  CompactReport r;
  r.bytes_before = file_bytes();
  int epoch = impl_->durable_epoch();
  impl_->write([&] { impl_->compact_rows(epoch, r); });
  impl_->pruned_below = std::max(impl_->pruned_below, epoch);
  r.pages_freed = impl_->pragma_int("freelist_count");
  if (r.pages_freed > 0) impl_->exec("PRAGMA incremental_vacuum");
  r.bytes_peak = std::max(r.bytes_before, file_bytes());
  // The WAL holds the moved pages; the checkpoint writes them back and cuts the
  // database file to its new length.
  sqlite3_wal_checkpoint_v2(impl_->db.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
  r.bytes_after = file_bytes();
  r.bytes_peak = std::max(r.bytes_peak, r.bytes_after);
  spdlog::debug(
      "ledger: compacted {} clips, pruned {} clips and {} file states of epochs before {}, freed {} pages: {} -> {} "
      "bytes",
      r.clips_compacted, r.clips_pruned, r.file_states_pruned, epoch, r.pages_freed, r.bytes_before, r.bytes_after);
  return r;
}

int64_t Ledger::mark_shards_missing(const std::vector<ClipId>& ids, int epoch) {
  int64_t files_rolled_back = 0;
  impl_->write([&] {
    impl_->exec("CREATE TEMP TABLE IF NOT EXISTS missing_clips(id TEXT PRIMARY KEY)");
    impl_->exec("DELETE FROM missing_clips");
    for (const auto& id : ids) impl_->run("INSERT OR IGNORE INTO missing_clips(id) VALUES (?)", id);
    impl_->run(
        "UPDATE file_states SET state = 'pending', reason = 'shard missing at recovery', updated = ? "
        "WHERE epoch >= ? AND state != 'pending' AND file_id IN (SELECT c.file_id FROM live_clips c JOIN missing_clips "
        "m "
        "ON m.id = c.id WHERE c.state IN ('ready', 'consumed')) "
        "AND epoch = (SELECT MAX(f.epoch) FROM file_states f WHERE f.file_id = file_states.file_id)",
        now_unix(), epoch);
    files_rolled_back = sqlite3_changes(impl_->db.get());
    // A clip not yet covered by a checkpoint forgets its plan chunk: its file is
    // decoded again and the clip trained again, so it must not read as trained
    // in this epoch (the engine skips clips deleted with plan_epoch == epoch).
    impl_->exec(
        "UPDATE live_clips SET state = 'deleted', reason = 'shard missing at recovery', "
        "plan_epoch = CASE WHEN state IN ('ready', 'consumed') THEN NULL ELSE plan_epoch END, "
        "plan_chunk = CASE WHEN state IN ('ready', 'consumed') THEN NULL ELSE plan_chunk END "
        "WHERE id IN (SELECT id FROM missing_clips)");
    impl_->exec("DELETE FROM missing_clips");
  });
  return files_rolled_back;
}

void Ledger::force_files_state(const std::vector<FileId>& ids, int epoch, FileState state, const std::string& reason) {
  impl_->write([&] {
    for (const auto& id : ids)
      impl_->run("UPDATE file_states SET state = ?, reason = ?, updated = ? WHERE file_id = ? AND epoch = ?",
                 to_string(state), reason, now_unix(), id, epoch);
  });
}

}  // namespace kaio::state
