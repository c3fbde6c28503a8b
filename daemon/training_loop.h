#pragma once
// The trainer thread: windows in plan order -> batches -> steps ->
// checkpoints -> release of the shards a durable checkpoint covers. In a job
// of several ranks (docs/multi-rank.md) each turn starts with an agreement
// among the ranks (step, pause, stop, epoch end), so they step and
// checkpoint together. It owns
// the Trainer, the checkpoint ring, the open shard readers and the batch
// being filled, and no other thread touches them (no lock). What status
// shows of training is copied into the core after each step.
#include <cstdint>
#include <map>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "daemon/checkpoint_ring.h"
#include "daemon/downloads.h"
#include "daemon/engine.h"
#include "daemon/engine_core.h"
#include "decode/shard.h"
#include "train/trainer.h"

namespace kaio::daemon {

// What keeps a rank of a job from the next step (training_loop.cpp names them for status).
enum class RankWait : int64_t { ready, data, network, auth, budget, disk_full, paused, stopping };

// What start-up hands the trainer thread: the model at the latest
// checkpoint, that checkpoint's plan position, and the ring of kept files.
struct Resumed {
  std::unique_ptr<train::Trainer> trainer;
  cache::PlanCursor checkpoint_cursor;
  CheckpointRing checkpoints;
};

class TrainingLoop {
 public:
  TrainingLoop(EngineCore& core, Downloads& downloads, Resumed resumed, WindowObserver* observer)
      : core_(core),
        downloads_(downloads),
        trainer_(std::move(resumed.trainer)),
        checkpoint_cursor_(resumed.checkpoint_cursor),
        ring_(std::move(resumed.checkpoints)),
        observer_(observer) {}

  void run(const std::stop_token& st);

 private:
  // What the ranks of the job agreed to do this turn (train/collective.h).
  struct Turn {
    bool stop = false, pause = false, unacknowledged_pause = false;
    bool all_ready = false;  // every rank has a complete batch (possibly empty)
    int64_t windows = 0;     // in the global batch
  };
  Turn agree(const std::stop_token& st);
  void publish_rank_waits(const int64_t* codes);
  RankWait wait_code(const std::stop_token& st);
  void hold_for_pause(const Turn& turn);
  bool agree_on_early_checkpoint();
  void share_data_waits();
  void abort_job_on_error();
  bool limits_reached() const;
  bool fill_batch(const std::stop_token& st, double& waited);
  bool take_ready_windows();
  bool alone() const { return core_.job->world() == 1; }
  void step(std::vector<uint8_t>& batch_bytes, size_t window_bytes);
  void stage_batch(std::vector<uint8_t>& batch_bytes, size_t window_bytes);
  void stage_next_batch(std::vector<uint8_t>& batch_bytes, size_t window_bytes);
  cache::PlanCursor resume_cursor();
  void check_waiter_can_fit(const cache::BudgetStatus& b);
  bool early_checkpoint_needed();
  void compact_ledger();
  void checkpoint();
  void write_checkpoint(const std::filesystem::path& path, int64_t step, const cache::PlanCursor& cursor);
  void release(const cache::PlanCursor& cursor, int64_t step);
  bool finish_epoch();
  void finish();

  EngineCore& core_;
  Downloads& downloads_;
  std::unique_ptr<train::Trainer> trainer_;
  cache::PlanCursor checkpoint_cursor_;  // of the checkpoint at core_.checkpoint_step
  CheckpointRing ring_;
  WindowObserver* observer_;
  // Open shards by clip id; checkpoint() closes a reader when retention
  // unlinks its shard, so no deleted shard stays mapped behind the budget.
  std::map<std::string, std::unique_ptr<decode::ShardReader>> shard_readers_;
  // The batch being filled. A pause or a stop holds it untrained and
  // checkpoints the plan position before its first window, so batches stay a
  // pure function of the plan whatever interrupts.
  std::vector<cache::WindowRef> batch_;
  cache::PlanCursor batch_cursor_;
  bool batch_ready_ = false;   // batch_ is complete and waits for the other ranks' turn
  bool batch_staged_ = false;  // batch_'s windows are with the trainer for its next step
  bool job_paused_ = false;    // the job's pause checkpoint is written
  double own_data_wait_ = 0;   // seconds this rank waited for its own windows
};

}  // namespace kaio::daemon
