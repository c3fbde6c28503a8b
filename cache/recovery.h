#pragma once
// Start-up recovery: makes the disk and the ledger agree after a crash, before
// anything else runs (no Budget yet, no writers).
//  * Files under cache_dir/state_dir the ledger does not vouch for are deleted,
//    except kaio.db, its -wal/-shm, the lock file and known checkpoints.
//  * "*.tmp" files (checkpoint and durable-write temporaries) are deleted.
//  * "<download>.part" files of known downloads are kept for resume, and so is
//    a split download's "<download>.part.ranges" (its parts' progress) while
//    its .part is there.
//  * A clip whose shard is missing is marked deleted; if it was not yet
//    committed its source file goes back to pending (fetched and decoded again).
//  * A downloaded or extracting file whose download is missing goes back to
//    pending; extracting with the download present goes back to downloaded;
//    downloading goes back to pending (its .part stays).
//  * Checkpoint rows whose file is missing are dropped.
// Paths are compared after std::filesystem::absolute + lexically_normal.
// All ledger changes happen in one transaction with set-based SQL.
#include <cstdint>
#include <filesystem>
#include <string>

#include "state/ledger.h"

namespace kaio::cache {

struct RecoveryReport {
  int64_t orphans_deleted = 0;
  uint64_t orphan_bytes = 0;  // on disk
  int64_t temporaries_deleted = 0;
  uint64_t temporary_bytes = 0;
  int64_t parts_kept = 0;
  uint64_t part_bytes = 0;  // bytes already downloaded, resumable
  int64_t shards_missing = 0;
  int64_t files_rolled_back = 0;  // to pending or downloaded
  int64_t checkpoints_missing = 0;
  std::string summary() const;  // one log line
};

RecoveryReport recover(state::Ledger& ledger, const std::filesystem::path& cache_dir,
                       const std::filesystem::path& state_dir);

}  // namespace kaio::cache
