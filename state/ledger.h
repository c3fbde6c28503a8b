#pragma once
// The ledger: kaiod's durable memory, one SQLite file (state_dir/kaio.db) in WAL
// mode with synchronous=FULL, so a row that a call returned from survives kill -9
// and power loss. One process at a time: open() takes an exclusive flock on
// state_dir/lock and writes its pid there for the "already in use" message.
//
// Ids are stable across restarts and machines (a hash of repo + path, and of
// repo + path + member for clips), never SQLite row numbers.
//
// Thread-safe: every method may be called from any thread; transaction() holds
// the connection for its whole body, so other threads wait (bounded by
// busy_timeout for other processes, by the body's length for threads).
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "state/run_series.h"

namespace kaio::state {

using FileId = std::string;  // 16 hex digits: stable_id(repo, path)
using ClipId = std::string;  // 16 hex digits: stable_id(repo, path + "\n" + member)

FileId file_id(std::string_view repo, std::string_view path);
ClipId clip_id(std::string_view repo, std::string_view path, std::string_view member);

// A file moves forward through these states once per epoch; `failed` and
// `pending` (retry, or a rollback by recovery) may be reached from any state.
enum class FileState { pending, downloading, downloaded, extracting, decoded, done, failed };
enum class ClipState { ready, consumed, committed, deleted, failed };

std::string_view to_string(FileState s);
std::string_view to_string(ClipState s);
FileState parse_file_state(std::string_view s);  // throws Error(usage) naming the text
ClipState parse_clip_state(std::string_view s);

struct SourceRecord {
  std::string endpoint;
  std::string repo;
  std::string revision;        // as configured ("main")
  std::string commit_sha;      // what `revision` resolved to on the first run
  std::string selection_json;  // include/exclude/captions globs, as JSON
};

struct FileRecord {
  FileId id;         // filled in by upsert_files when empty
  std::string path;  // path inside the repo
  uint64_t size = 0;
  std::string git_oid;
  std::string sha256;  // LFS sha256, "" when the file is not in LFS
};

struct FileStatus {
  FileRecord file;
  int epoch = 0;
  FileState state = FileState::pending;
  std::string reason;                // why it failed (or was rolled back)
  int attempts = 0;                  // failures so far in this epoch
  std::filesystem::path local_path;  // where the download lands; its ".part" while in flight
};

struct ClipRecord {
  ClipId id;  // filled in by add_clips when empty (needs `repo_path`)
  FileId file_id;
  std::string repo_path;     // the source file's path in the repo, for the id
  std::string member;        // member name inside the archive ("" when the file is the video)
  int64_t member_index = 0;  // position in the archive: plan order within a file
  std::string caption;
  int64_t windows = 0;
  std::filesystem::path shard_path;
  uint64_t shard_bytes = 0;
  ClipState state = ClipState::ready;
  std::string reason;
  std::optional<int> plan_epoch;  // the chunk this clip was trained in, once assigned
  std::optional<int64_t> plan_chunk;
  // Read back from a compact row (see Ledger::compact_after_checkpoint): a clip
  // trained, covered by a durable checkpoint and deleted. Such a row keeps the
  // id, file, member_index, windows and plan chunk, which exactly-once and the
  // plan need; caption, shard path and reason are gone and `member` reads
  // "#<member_index>" (ls names the clip "<path>:#<index>").
  bool compacted = false;
};

struct TrainingPosition {
  int epoch = 0;
  int64_t step = 0;
  int64_t samples = 0;
  std::string cursor;  // opaque to the ledger (cache::PlanCursor::to_string)
};

struct CheckpointRecord {
  int64_t step = 0;
  std::filesystem::path path;
  uint64_t bytes = 0;
  int64_t created_unix = 0;
  std::string cursor;
};

struct PauseState {
  bool paused = false;
  std::string reason;
  int64_t since_unix = 0;
};

// One rank of a data-plane consumer (docs/data-plane.md): its committed
// token is (epoch, rank-local window).
struct ConsumerRank {
  std::string consumer;
  int world = 1;
  int rank = 0;
  int epoch = 0;
  int64_t window = 0;
  int64_t last_seen_unix = 0;
};

// Where the data plane's window sequence resumes after a restart: the
// oldest window some consumer has not committed (its global index in its
// epoch) and the plan cursor recorded when it was taken. Stored in the
// position row (step = the global index) with train.backend "external".
struct DataPlanePosition {
  int epoch = 0;
  int64_t global = 0;
  std::string cursor;  // cache::PlanCursor::to_string; "" before any commit
};

// Everything on disk the ledger vouches for; recovery deletes the rest.
struct KnownPaths {
  struct Shard {
    ClipId clip;
    std::filesystem::path path;
  };
  std::vector<Shard> shards;  // clips not yet deleted or failed
  std::vector<std::filesystem::path> checkpoints;
  // local_path of files not yet extracted (pending, downloading, downloaded,
  // extracting); their ".part" siblings are vouched for too.
  std::vector<std::filesystem::path> downloads;
};

// What one compact_after_checkpoint did.
struct CompactReport {
  int64_t clips_compacted = 0;     // deleted clips moved to compact rows
  int64_t clips_pruned = 0;        // rows of clips deleted in an epoch before the checkpoint's
  int64_t file_states_pruned = 0;  // file_states rows of epochs before the checkpoint's
  int64_t pages_freed = 0;         // pages incremental_vacuum gave back to the filesystem
  uint64_t bytes_before = 0;       // file_bytes() before and after
  uint64_t bytes_after = 0;
  uint64_t bytes_peak = 0;  // the most file_bytes() measured during the call (WAL before its truncation)
};

struct LedgerOptions {
  int busy_timeout_ms = 5000;
  // After a commit the WAL is checkpointed and truncated when it grew past this,
  // so db + WAL stay inside the ledger's standing budget claim.
  uint64_t wal_limit_bytes = 4u << 20;
};

class Ledger {
 public:
  static constexpr int kSchemaVersion = 3;
  static constexpr const char* kDbName = "kaio.db";
  static constexpr const char* kLockName = "lock";

  // Creates state_dir if needed. Throws Error(io) "another kaiod (pid N) is using
  // <dir>" when another process holds it, Error(corrupt) for a newer schema.
  static Ledger open(const std::filesystem::path& state_dir, const LedgerOptions& options = {});
  Ledger(Ledger&&) noexcept;
  Ledger& operator=(Ledger&&) noexcept;
  ~Ledger();

  std::filesystem::path db_path() const;
  // Bytes on disk (st_blocks) of kaio.db, its WAL and SHM: for status and the budget.
  uint64_t disk_bytes() const;
  // Length (st_size) of kaio.db, its WAL and SHM together: the ledger's own size,
  // to hold against its allowance.
  uint64_t file_bytes() const;
  int schema_version();

  // Runs `body` in one IMMEDIATE transaction; rolls back and rethrows if it
  // throws. Nested calls join the outer transaction.
  void transaction(const std::function<void()>& body);

  // --- source ---
  // First run: stores `wanted` as is. Later runs: returns the stored record,
  // keeping its commit_sha even if the branch moved. A different repo is an
  // Error(config) naming both repos (use a fresh state_dir).
  SourceRecord pin_source(const SourceRecord& wanted);
  std::optional<SourceRecord> source();

  // --- files (listed in path order; plan positions index this list) ---
  void upsert_files(const std::string& repo, std::vector<FileRecord> files);
  std::vector<FileRecord> files();
  std::optional<FileRecord> file(const FileId& id);

  // --- per-epoch file state ---
  // Throws Error(internal) for a backward move other than to pending/failed.
  // Moving to `failed` counts an attempt.
  void set_file_state(const FileId& id, int epoch, FileState state, const std::string& reason = "");
  void set_file_local_path(const FileId& id, int epoch, const std::filesystem::path& local_path);
  std::optional<FileStatus> file_status(const FileId& id, int epoch);
  std::vector<FileStatus> list_files(int epoch, std::optional<FileState> only = std::nullopt);
  std::map<FileState, int64_t> file_counts(int epoch);

  // --- clips ---
  // Inserts or replaces (a re-decoded clip starts again as `ready`).
  void add_clips(const std::string& repo, std::vector<ClipRecord> clips);
  void set_clip_state(const ClipId& id, ClipState state, const std::string& reason = "");
  void set_clips_state(const std::vector<ClipId>& ids, ClipState state, const std::string& reason = "");
  void assign_chunk(const std::vector<ClipId>& ids, int epoch, int64_t chunk);
  std::optional<ClipRecord> clip(const ClipId& id);
  // Ordered by (source file path, member_index); limit 0 = all.
  std::vector<ClipRecord> list_clips(std::optional<ClipState> only = std::nullopt, size_t limit = 0);
  std::vector<ClipRecord> clips_of_file(const FileId& id);
  std::map<ClipState, int64_t> clip_counts();
  // Clips assigned to a chunk strictly before (epoch, chunk) and not yet deleted or failed.
  std::vector<ClipRecord> clips_before(int epoch, int64_t chunk);

  // --- training position, checkpoints, pause ---
  void save_position(const TrainingPosition& position);
  TrainingPosition position();
  void add_checkpoint(const CheckpointRecord& checkpoint);
  void remove_checkpoint(const std::filesystem::path& path);
  std::vector<CheckpointRecord> checkpoints();  // oldest step first
  void set_paused(bool paused, const std::string& reason);
  PauseState pause_state();

  // --- data-plane consumers ---
  // Creates `world` rank rows at `start` unless the consumer exists.
  void add_consumer(const std::string& name, int world, int epoch, int64_t window, int64_t now_unix);
  // A rank's new committed token, and with it the resume position, in one
  // durable transaction.
  void commit_consumer(const ConsumerRank& token, const DataPlanePosition& resume);
  void touch_consumer(const std::string& name, int rank, int64_t now_unix);
  std::vector<ConsumerRank> consumers();  // by name, then rank
  DataPlanePosition data_plane_position();

  // --- counters for status (bytes_downloaded, clips_decoded, windows_trained...) ---
  void add_counter(const std::string& name, int64_t delta);
  int64_t counter(const std::string& name);
  std::map<std::string, int64_t> counters();

  // --- the run's time series (run_series.h), bounded to run_series::kCap rows ---
  void append_run_sample(const RunSample& sample);
  std::vector<RunSample> run_samples();  // oldest first

  KnownPaths known_paths();

  // --- the ledger's own size ---
  // Call right after a checkpoint is durable and retention deleted the clips it
  // covers (outside any transaction). Keeps the file bounded by the clips of one
  // epoch at a few dozen bytes each (about 6 MB for 100K clips) instead of
  // growing with every caption ever decoded:
  //  * deleted clips that were trained (plan chunk assigned) become compact rows:
  //    id, file, member_index, windows, plan epoch and chunk; what
  //    `kaioctl ls`, ledger.clip() (exactly-once after a restart) and
  //    clips_of_file() (the plan's resume) read stays answered the same way;
  //  * compact rows and file_states rows of epochs before the durable position's
  //    epoch (position().epoch, saved with the checkpoint) are deleted: a clip
  //    from an earlier epoch is trained again, as before;
  //  * freed pages go back to the filesystem (auto_vacuum=INCREMENTAL, then
  //    `PRAGMA incremental_vacuum`), and the WAL is checkpointed and truncated.
  // Also runs once in open() when a database from before schema 3 is upgraded
  // (then a one-time VACUUM switches it to incremental auto-vacuum).
  CompactReport compact_after_checkpoint();

  // --- recovery (set-based, each one transaction) ---
  // Clips whose shard is gone: marked deleted; the source files of those not yet
  // committed go back to pending, in the latest epoch (`epoch` or later) that
  // holds a state for them, so they are fetched and decoded again.
  // Returns how many files went back to pending.
  int64_t mark_shards_missing(const std::vector<ClipId>& ids, int epoch);
  // Moves many files of `epoch` to `state` (no transition check: recovery only).
  void force_files_state(const std::vector<FileId>& ids, int epoch, FileState state, const std::string& reason);

 private:
  struct Impl;
  explicit Ledger(std::unique_ptr<Impl> impl);
  void upgrade_to_incremental_vacuum();
  std::unique_ptr<Impl> impl_;
};

}  // namespace kaio::state
