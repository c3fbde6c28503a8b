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

#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "state/schema.h"
#include "state/sqlite.h"

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

// ---------------------------------------------------------------- the connection

namespace {

// Takes the exclusive lock on state_dir/lock, or explains who holds it.
// The flock lasts as long as the descriptor.
Fd lock_state_dir(const fs::path& dir) {
  fs::path lock_path = dir / Ledger::kLockName;
  Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  int fd = lock.get();
  if (fd < 0) throw_errno("open lock file", lock_path.string());
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

struct Ledger::Impl {
  Impl(const fs::path& state_dir, const LedgerOptions& opts)
      : dir(state_dir),
        options(opts),
        lock(lock_state_dir(state_dir)),
        db(state_dir / kDbName, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX) {}

  fs::path dir;
  LedgerOptions options;
  Fd lock;           // the flock on state_dir/lock, taken before the database opens
  sql::Database db;  // closes before the lock goes
  std::recursive_mutex mu;
  int tx_depth = 0;

  const fs::path& db_file() const { return db.file(); }

  template <typename... Args>
  sql::Query query(const std::string& sql, const Args&... args) {
    return db.query(sql, args...);
  }

  // Runs a statement without result rows.
  template <typename... Args>
  void run(const std::string& sql, const Args&... args) {
    db.query(sql, args...).run("step " + sql.substr(0, 60));
  }

  // True when the query yields a row.
  template <typename... Args>
  bool exists(const std::string& sql, const Args&... args) {
    return db.query(sql, args...).step();
  }

  // Keeps the WAL inside its allowance: checkpoint and truncate once it grew past the limit.
  void bound_wal() {
    fs::path wal = db_file();
    wal += "-wal";
    struct stat st {};
    if (::stat(wal.c_str(), &st) != 0) return;
    if (static_cast<uint64_t>(st.st_size) <= options.wal_limit_bytes) return;
    // Another reader may keep it from truncating fully; the next commit retries.
    db.checkpoint_truncate();
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
      sql::Transaction tx(db);
      f();
      tx.commit();
    } catch (...) {
      --tx_depth;
      throw;
    }
    --tx_depth;
    bound_wal();
  }

  int64_t pragma_int(const char* name) {
    auto s = query(std::string("PRAGMA ") + name);
    return s.step() ? s.integer(0) : 0;
  }

  // The epoch of the durable position (saved with each checkpoint).
  int durable_epoch() {
    auto s = query("SELECT epoch FROM position WHERE id = 1");
    return s.step() ? static_cast<int>(s.integer(0)) : 0;
  }

  // Epoch below which old rows are already pruned (once per epoch is enough).
  int pruned_below = -1;

  // The row work of compact_after_checkpoint; call inside write().
  void compact_rows(int epoch, CompactReport& r) {
    run(std::string("INSERT OR REPLACE INTO done_clips(key, file_key, member_index, windows, plan_epoch, plan_chunk) "
                    "SELECT kaio_key(id), kaio_key(file_id), member_index, windows, plan_epoch, plan_chunk "
                    "FROM live_clips WHERE ") +
        kCompactable);
    r.clips_compacted = db.changes();
    run(std::string("DELETE FROM live_clips WHERE ") + kCompactable);
    // Deleted clips that stay live (never trained, or ids from elsewhere) lose their texts.
    run("UPDATE live_clips SET caption = '', shard_path = '' WHERE state = 'deleted' AND (caption != '' OR shard_path "
        "!= '')");
    if (epoch > pruned_below) {
      run("DELETE FROM done_clips WHERE plan_epoch < ?", epoch);
      r.clips_pruned = db.changes();
      run("DELETE FROM live_clips WHERE state = 'deleted' AND plan_epoch < ?", epoch);
      r.clips_pruned += db.changes();
      run("DELETE FROM file_states WHERE epoch < ?", epoch);
      r.file_states_pruned = db.changes();
    }
  }

  static FileStatus read_file_status(const sql::Query& s) {
    FileStatus st;
    st.file.id = s.text(0);
    st.file.path = s.text(1);
    st.file.size = static_cast<uint64_t>(s.integer(2));
    st.file.git_oid = s.text(3);
    st.file.sha256 = s.text(4);
    st.epoch = static_cast<int>(s.integer(5));
    st.state = parse_file_state(s.text(6));
    st.reason = s.text(7);
    st.attempts = static_cast<int>(s.integer(8));
    st.local_path = s.text(9);
    return st;
  }

  static ClipRecord read_clip(const sql::Query& s) {
    ClipRecord c;
    c.id = s.text(0);
    c.file_id = s.text(1);
    c.member = s.text(2);
    c.member_index = s.integer(3);
    c.caption = s.text(4);
    c.windows = s.integer(5);
    c.shard_path = s.text(6);
    c.shard_bytes = static_cast<uint64_t>(s.integer(7));
    c.state = parse_clip_state(s.text(8));
    c.reason = s.text(9);
    if (!s.is_null(10)) c.plan_epoch = static_cast<int>(s.integer(10));
    if (!s.is_null(11)) c.plan_chunk = s.integer(11);
    c.repo_path = s.text(12);
    c.compacted = s.integer(13) != 0;
    return c;
  }

  static std::vector<ClipRecord> read_clips(sql::Query s) {
    std::vector<ClipRecord> out;
    while (s.step()) out.push_back(read_clip(s));
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

}  // namespace

// ---------------------------------------------------------------- open, transactions

Ledger::Ledger(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Ledger::Ledger(Ledger&&) noexcept = default;
Ledger& Ledger::operator=(Ledger&&) noexcept = default;
Ledger::~Ledger() {
  if (impl_) {
    impl_->db.forget_statements();
    impl_->db.checkpoint_truncate();
  }
}

Ledger Ledger::open(const fs::path& state_dir, const LedgerOptions& options) {
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) throw Error(ErrorKind::io, "create state folder " + state_dir.string() + ": " + ec.message());
  auto impl = std::make_unique<Impl>(state_dir, options);
  sqlite3* raw = impl->db.get();
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  if (sqlite3_create_function_v2(raw, "kaio_key", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, nullptr, &sql_key_of, nullptr,
                                 nullptr, nullptr) != SQLITE_OK)
    impl->db.fail("register kaio_key");
  // Freed pages go back to the filesystem on `PRAGMA incremental_vacuum`. Takes
  // effect on a new database (before its first table); an older one is switched
  // below with a one-time VACUUM.
  impl->db.exec("PRAGMA auto_vacuum = INCREMENTAL");
  impl->db.exec("PRAGMA journal_mode = WAL");
  impl->db.exec("PRAGMA synchronous = FULL");
  impl->db.exec("PRAGMA foreign_keys = ON");
  migrate(impl->db);
  Ledger ledger(std::move(impl));
  if (ledger.impl_->pragma_int("auto_vacuum") != 2) ledger.upgrade_to_incremental_vacuum();
  spdlog::info("ledger {}: open, schema version {}, {} bytes", ledger.impl_->db_file().string(), kSchemaVersion,
               ledger.file_bytes());
  return ledger;
}

fs::path Ledger::db_path() const {
  return impl_->db_file();
}

uint64_t Ledger::disk_bytes() const {
  uint64_t total = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    fs::path p = impl_->db_file();
    p += suffix;
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) total += static_cast<uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

uint64_t Ledger::file_bytes() const {
  uint64_t total = 0;
  for (const char* suffix : {"", "-wal", "-shm"}) {
    fs::path p = impl_->db_file();
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
  impl_->db.forget_statements();  // VACUUM wants no statement in progress
  if (std::string err; !impl_->db.try_exec("PRAGMA auto_vacuum = INCREMENTAL; VACUUM", &err)) {
    spdlog::warn("ledger {}: VACUUM to incremental auto-vacuum failed ({}); freed pages are reused but not returned",
                 impl_->db_file().string(), err);
  }
  impl_->db.checkpoint_truncate();
  spdlog::info(
      "ledger {}: upgraded to compact rows and incremental auto-vacuum: {} clips compacted, {} pruned, {} -> {} bytes",
      impl_->db_file().string(), r.clips_compacted, r.clips_pruned, before, file_bytes());
}

int Ledger::schema_version() {
  std::lock_guard lock(impl_->mu);
  return state::schema_version(impl_->db);
}

void Ledger::transaction(const std::function<void()>& body) {
  impl_->write(body);
}

// ---------------------------------------------------------------- source

std::optional<SourceRecord> Ledger::source() {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->query("SELECT endpoint, repo, revision, commit_sha, selection FROM source WHERE id = 1");
  std::optional<SourceRecord> out;
  if (s.step()) out = SourceRecord{s.text(0), s.text(1), s.text(2), s.text(3), s.text(4)};
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
  auto s = impl_->query("SELECT id, path, size, git_oid, sha256 FROM files ORDER BY path");
  std::vector<FileRecord> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), static_cast<uint64_t>(s.integer(2)), s.text(3), s.text(4)});
  return out;
}

std::optional<FileRecord> Ledger::file(const FileId& id) {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->query("SELECT id, path, size, git_oid, sha256 FROM files WHERE id = ?", id);
  std::optional<FileRecord> out;
  if (s.step()) out = FileRecord{s.text(0), s.text(1), static_cast<uint64_t>(s.integer(2)), s.text(3), s.text(4)};
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
  auto s = impl_->query(std::string(kFileStatusSelect) + "WHERE s.file_id = ? AND s.epoch = ?", id, epoch);
  std::optional<FileStatus> out;
  if (s.step()) out = impl_->read_file_status(s);
  return out;
}

std::vector<FileStatus> Ledger::list_files(int epoch, std::optional<FileState> only) {
  std::lock_guard lock(impl_->mu);
  auto s = only ? impl_->query(std::string(kFileStatusSelect) + "WHERE s.epoch = ? AND s.state = ? ORDER BY f.path",
                               epoch, to_string(*only))
                : impl_->query(std::string(kFileStatusSelect) + "WHERE s.epoch = ? ORDER BY f.path", epoch);
  std::vector<FileStatus> out;
  while (s.step()) out.push_back(impl_->read_file_status(s));
  return out;
}

std::map<FileState, int64_t> Ledger::file_counts(int epoch) {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->query("SELECT state, COUNT(*) FROM file_states WHERE epoch = ? GROUP BY state", epoch);
  std::map<FileState, int64_t> out;
  while (s.step()) out[parse_file_state(s.text(0))] = s.integer(1);
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
      if (impl_->db.changes() > 0) continue;
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
      if (impl_->db.changes() > 0) continue;
      if (auto key = key_of(id))
        impl_->run("UPDATE done_clips SET plan_epoch = ?, plan_chunk = ? WHERE key = ?", epoch, chunk, *key);
    }
  });
}

std::optional<ClipRecord> Ledger::clip(const ClipId& id) {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->query(clip_select(std::string(kLiveClips) + "WHERE id = ?"), id);
  std::optional<ClipRecord> out;
  if (s.step()) out = impl_->read_clip(s);
  if (out) return out;
  auto key = key_of(id);
  if (!key) return out;
  s = impl_->query(clip_select(std::string(kDoneClips) + "WHERE key = ?"), *key);
  if (s.step()) out = impl_->read_clip(s);
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
  auto s = impl_->query("SELECT state, COUNT(*) FROM live_clips GROUP BY state");
  std::map<ClipState, int64_t> out;
  while (s.step()) out[parse_clip_state(s.text(0))] = s.integer(1);
  s = impl_->query("SELECT COUNT(*) FROM done_clips");
  if (s.step() && s.integer(0) > 0) out[ClipState::deleted] += s.integer(0);
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
  auto s = impl_->query("SELECT epoch, step, samples, cursor FROM position WHERE id = 1");
  TrainingPosition p;
  if (s.step()) p = {static_cast<int>(s.integer(0)), s.integer(1), s.integer(2), s.text(3)};
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
  auto s = impl_->query("SELECT step, path, bytes, created, cursor FROM checkpoints ORDER BY step, created");
  std::vector<CheckpointRecord> out;
  while (s.step())
    out.push_back({s.integer(0), s.text(1), static_cast<uint64_t>(s.integer(2)), s.integer(3), s.text(4)});
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
  auto s = impl_->query("SELECT paused, reason, since FROM pause WHERE id = 1");
  PauseState p;
  if (s.step()) p = {s.integer(0) != 0, s.text(1), s.integer(2)};
  return p;
}

void Ledger::add_consumer(const std::string& name, int world, int epoch, int64_t window, int64_t now_unix) {
  impl_->write([&] {
    impl_->run(kConsumersTable);
    for (int rank = 0; rank < world; ++rank)
      impl_->run(
          "INSERT OR IGNORE INTO consumers(name, world, rank, epoch, local_window, last_seen) VALUES (?, ?, ?, ?, ?, "
          "?)",
          name, world, rank, epoch, window, now_unix);
  });
}

void Ledger::commit_consumer(const ConsumerRank& t, const DataPlanePosition& resume) {
  impl_->write([&] {
    impl_->run("UPDATE consumers SET epoch = ?, local_window = ?, last_seen = ? WHERE name = ? AND rank = ?", t.epoch,
               t.window, t.last_seen_unix, t.consumer, t.rank);
    // The trainer's position row: step holds the global index, so that
    // compaction reads the durable epoch from it as with the built-in trainer.
    impl_->run(
        "INSERT INTO position(id, epoch, step, samples, cursor) VALUES (1, ?, ?, 0, ?) ON CONFLICT(id) DO UPDATE SET "
        "epoch = excluded.epoch, step = excluded.step, cursor = excluded.cursor",
        resume.epoch, resume.global, resume.cursor);
  });
}

void Ledger::touch_consumer(const std::string& name, int rank, int64_t now_unix) {
  impl_->write(
      [&] { impl_->run("UPDATE consumers SET last_seen = ? WHERE name = ? AND rank = ?", now_unix, name, rank); });
}

std::vector<ConsumerRank> Ledger::consumers() {
  std::lock_guard lock(impl_->mu);
  if (!impl_->query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'consumers'").step()) return {};
  auto s = impl_->query("SELECT name, world, rank, epoch, local_window, last_seen FROM consumers ORDER BY name, rank");
  std::vector<ConsumerRank> out;
  while (s.step())
    out.push_back({s.text(0), static_cast<int>(s.integer(1)), static_cast<int>(s.integer(2)),
                   static_cast<int>(s.integer(3)), s.integer(4), s.integer(5)});
  return out;
}

DataPlanePosition Ledger::data_plane_position() {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->query("SELECT epoch, step, cursor FROM position WHERE id = 1");
  DataPlanePosition p;
  if (s.step()) p = {static_cast<int>(s.integer(0)), s.integer(1), s.text(2)};
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
  auto s = impl_->query("SELECT value FROM counters WHERE name = ?", name);
  int64_t v = s.step() ? s.integer(0) : 0;
  return v;
}

std::map<std::string, int64_t> Ledger::counters() {
  std::lock_guard lock(impl_->mu);
  auto s = impl_->query("SELECT name, value FROM counters ORDER BY name");
  std::map<std::string, int64_t> out;
  while (s.step()) out[s.text(0)] = s.integer(1);
  return out;
}

// ---------------------------------------------------------------- the run's time series

void Ledger::append_run_sample(const RunSample& sample) {
  impl_->write([&] { run_series::append(impl_->db, sample); });
}

std::vector<RunSample> Ledger::run_samples() {
  std::lock_guard lock(impl_->mu);
  return run_series::samples(impl_->db);
}

// ---------------------------------------------------------------- recovery support

KnownPaths Ledger::known_paths() {
  std::lock_guard lock(impl_->mu);
  KnownPaths out;
  auto s = impl_->query("SELECT id, shard_path FROM live_clips WHERE state IN ('ready', 'consumed', 'committed')");
  while (s.step()) out.shards.push_back({s.text(0), s.text(1)});
  s = impl_->query("SELECT path FROM checkpoints");
  while (s.step()) out.checkpoints.emplace_back(s.text(0));
  s = impl_->query(
      "SELECT DISTINCT local_path FROM file_states WHERE local_path != '' "
      "AND state IN ('pending', 'downloading', 'downloaded', 'extracting')");
  while (s.step()) out.downloads.emplace_back(s.text(0));
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
  if (r.pages_freed > 0) impl_->db.exec("PRAGMA incremental_vacuum");
  r.bytes_peak = std::max(r.bytes_before, file_bytes());
  // The WAL holds the moved pages; the checkpoint writes them back and cuts the
  // database file to its new length.
  impl_->db.checkpoint_truncate();
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
    impl_->db.exec("CREATE TEMP TABLE IF NOT EXISTS missing_clips(id TEXT PRIMARY KEY)");
    impl_->db.exec("DELETE FROM missing_clips");
    for (const auto& id : ids) impl_->run("INSERT OR IGNORE INTO missing_clips(id) VALUES (?)", id);
    impl_->run(
        "UPDATE file_states SET state = 'pending', reason = 'shard missing at recovery', updated = ? "
        "WHERE epoch >= ? AND state != 'pending' AND file_id IN (SELECT c.file_id FROM live_clips c JOIN missing_clips "
        "m "
        "ON m.id = c.id WHERE c.state IN ('ready', 'consumed')) "
        "AND epoch = (SELECT MAX(f.epoch) FROM file_states f WHERE f.file_id = file_states.file_id)",
        now_unix(), epoch);
    files_rolled_back = impl_->db.changes();
    // A clip not yet covered by a checkpoint forgets its plan chunk: its file is
    // decoded again and the clip trained again, so it must not read as trained
    // in this epoch (the engine skips clips deleted with plan_epoch == epoch).
    impl_->db.exec(
        "UPDATE live_clips SET state = 'deleted', reason = 'shard missing at recovery', "
        "plan_epoch = CASE WHEN state IN ('ready', 'consumed') THEN NULL ELSE plan_epoch END, "
        "plan_chunk = CASE WHEN state IN ('ready', 'consumed') THEN NULL ELSE plan_chunk END "
        "WHERE id IN (SELECT id FROM missing_clips)");
    impl_->db.exec("DELETE FROM missing_clips");
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
