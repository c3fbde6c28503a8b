#include "state/schema.h"

#include <array>
#include <string>

#include "common/error.h"
#include "common/log.h"
#include "state/ledger.h"
#include "state/sqlite.h"

namespace kaio::state {
namespace {

// Schema migrations: entry i brings user_version i to i + 1. The text is the
// on-disk format: never edit an entry, append one.
constexpr std::array<const char*, 3> kMigrations{
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
static_assert(kMigrations.size() == Ledger::kSchemaVersion, "a migration per schema version");

}  // namespace

// Not a migration: the data plane creates it on its first attach, so that a
// ledger that never serves consumers keeps its size (the budget counts every
// page of it at start, and at the smallest budget kaiod accepts one page
// more decided whether a clip fit). WITHOUT ROWID: one page, not two.
const char* const kConsumersTable = R"sql(
CREATE TABLE IF NOT EXISTS consumers(name TEXT NOT NULL, world INTEGER NOT NULL, rank INTEGER NOT NULL,
                                     epoch INTEGER NOT NULL, local_window INTEGER NOT NULL, last_seen INTEGER NOT NULL,
                                     PRIMARY KEY (name, rank)) WITHOUT ROWID;
)sql";

int schema_version(sql::Database& db) {
  auto s = db.query("PRAGMA user_version");
  s.step();
  return static_cast<int>(s.integer(0));
}

void migrate(sql::Database& db) {
  int version = schema_version(db);
  int latest = static_cast<int>(kMigrations.size());
  if (version > latest)
    throw Error(ErrorKind::corrupt, "ledger " + db.file().string() + " has schema version " + std::to_string(version) +
                                        ", newer than this kaiod understands (" + std::to_string(latest) + ")");
  for (; version < latest; ++version) {
    sql::Transaction tx(db);
    db.exec(kMigrations[static_cast<size_t>(version)]);
    db.exec(("PRAGMA user_version = " + std::to_string(version + 1)).c_str());
    tx.commit();
    spdlog::info("ledger {}: migrated schema to version {}", db.file().string(), version + 1);
  }
}

}  // namespace kaio::state
