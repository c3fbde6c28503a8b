#pragma once
// The storage budget: bytes ON DISK under cache_dir and state_dir never exceed
// `budget`, not even for a moment, as long as every writer stays inside its claim.
//
// Accounting rules:
//  * total = baseline + ledger_allowance + sum of claims, and total <= budget always.
//  * baseline: st_blocks of everything under both folders, measured once at
//    construction (shards left by the last run, directory blocks, the db's
//    files beyond the ledger allowance).
//    adopt_existing() turns part of it into a claim so that deleting a file that
//    was already there gives its bytes back (drop the claim after the unlink).
//  * ledger_allowance: a standing claim for kaio.db, its WAL and SHM (the
//    baseline leaves out what of them it covers). The ledger keeps its WAL below LedgerOptions::wal_limit_bytes by
//    checkpointing with TRUNCATE; pick wal_limit_bytes <= ledger_allowance / 2.
//  * A claim of N bytes accounts on_disk_bytes(N) = N rounded up to the block
//    size, plus one block for the file's inode/extent and directory-entry growth.
//    One claim covers ONE file; a writer creating a folder claims 0 bytes for it.
//  * Writers write only after their reservation returned, shrink a claim only
//    after truncating, and drop a claim only after the unlink.
//  * reserve() also waits until the filesystem keeps free_disk_floor free
//    (statvfs, polled every floor_poll while that is what blocks). Claims that
//    are held but not yet written are not visible to statvfs, so concurrent
//    writers may undercut the floor by at most their unwritten claims.
//  * FIFO: a reservation is granted only when every earlier one was, so a big
//    one is not starved by small ones. Growing an existing claim goes before new
//    reservations (finishing work is what frees space).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/io.h"

namespace kaio::cache {

struct BudgetOptions {
  uint64_t budget = 0;
  uint64_t free_disk_floor = 0;
  std::filesystem::path cache_dir;
  std::filesystem::path state_dir;
  uint64_t ledger_allowance = 16u << 20;
  uint64_t block_size = 4096;
  uint64_t per_file_allowance = 4096;
  std::chrono::milliseconds floor_poll{200};
};

struct BudgetStatus {
  uint64_t budget = 0;
  uint64_t baseline = 0;  // on disk at start and not adopted/released
  uint64_t ledger_allowance = 0;
  uint64_t reserved = 0;  // held by claims (on-disk accounting)
  uint64_t total = 0;     // baseline + ledger_allowance + reserved
  uint64_t peak_total = 0;
  uint64_t available = 0;  // budget - total
  size_t waiting = 0;
  std::string oldest_waiting_what;  // "" when nobody waits
  uint64_t oldest_waiting_bytes = 0;
  bool floor_reached = false;  // the oldest waits for free disk (free_disk_floor), not for the budget
};

class Budget : public SpaceReserver {
 public:
  // Creates the folders if needed and measures the baseline; throws Error(budget) when baseline + ledger_allowance
  // is already over the budget (naming both folders and the sizes).
  explicit Budget(const BudgetOptions& options);
  ~Budget() override;
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;

  // Blocks until the bytes fit. Throws Error(budget) at once if they never can,
  // Error(cancelled) after cancel().
  std::unique_ptr<SpaceClaim> reserve(uint64_t bytes, const std::string& what) override;
  // Same, but gives up at `deadline` and returns nullptr.
  std::unique_ptr<SpaceClaim> reserve(uint64_t bytes, const std::string& what,
                                      std::chrono::steady_clock::time_point deadline);
  // Never waits: nullptr unless the bytes fit now and nobody is queued.
  std::unique_ptr<SpaceClaim> try_reserve(uint64_t bytes, const std::string& what) override;
  // Moves a file that was on disk at start (its st_blocks) from the baseline into
  // a claim (never waits); drop the claim after unlinking the file.
  std::unique_ptr<SpaceClaim> adopt_existing(const std::filesystem::path& file);

  // A config reload. Raising it lets waiters go at once; lowering it below
  // what is in use holds new reservations back until enough is released.
  void set_budget(uint64_t budget);
  // The bytes that stay in use for good beside any one claim (the daemon's
  // fixed working set): a claim larger than what they leave can never be
  // granted, and reserve() says so at once instead of waiting.
  void set_standing(uint64_t bytes);
  // Wakes every waiter with Error(cancelled); later reservations throw it too.
  void cancel();
  BudgetStatus status() const;
  uint64_t on_disk_bytes(uint64_t file_bytes) const override;

  struct Core;

 private:
  std::shared_ptr<Core> core_;
};

// Start-up check: throws Error(budget) "storage.budget X cannot hold <what>:
// it needs at least Y" when min_work_bytes can never fit.
void check_budget_fits(uint64_t budget, uint64_t min_work_bytes, const std::string& what);

}  // namespace kaio::cache
