#pragma once
// The engine's core: the state that start-up, the producer thread, the
// trainer thread and the control commands share, and the one lock that
// guards it (`mutex`, with `changed` to wake whoever waits on it). It owns
// the ledger, the budget, the Hub client and downloader, the window
// sequence, the shards by clip, the pause flag, the epoch, the figures
// status shows, the disk-full wait and the working-set sizes. The stages
// beside it (Downloads, FileRun, Producer, TrainingLoop) hold a reference to
// it and keep their own state to themselves; helpers they all need live here
// so that nothing beside the core depends on another stage's internals.
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stop_token>
#include <string>
#include <vector>

#include "cache/budget.h"
#include "cache/plan.h"
#include "cache/retention.h"
#include "common/config.h"
#include "common/error.h"
#include "daemon/status.h"
#include "fetch/downloader.h"
#include "fetch/hub.h"
#include "state/ledger.h"
#include "train/collective.h"

namespace kaio::daemon {

using Clock = std::chrono::steady_clock;
class RunSeriesWriter;

// Bytes per second over the last minute or so, from a growing counter.
class Rate {
 public:
  void sample(double total);
  double per_second() const;

 private:
  std::deque<std::pair<Clock::time_point, double>> points_;
};

struct EngineCore {
  explicit EngineCore(Config c);

  // Set at start-up; read-only once the threads run, except the config
  // fields reload() changes under `mutex`.
  Config config;
  std::filesystem::path work_dir, download_dir, checkpoint_dir;
  state::Ledger ledger;
  std::unique_ptr<cache::Budget> budget;
  std::unique_ptr<fetch::HubClient> hub;
  std::unique_ptr<fetch::Downloader> downloader;
  cache::ShardRetention retention{ledger};
  std::string commit_sha;
  std::vector<state::FileRecord> files;
  uint64_t trainer_checkpoint_bytes = 0;  // the trainer's checkpoint_bytes(), fixed by its config
  std::string backend;                    // the trainer's
  // The ranks of the job this kaiod is one of (docs/multi-rank.md); world 1 alone.
  std::shared_ptr<train::Collective> job = train::make_single_collective();
  std::vector<double> job_data_wait;  // guarded by `mutex`: each rank's seconds waiting for its own data
  // Guarded by `mutex`: the ranks that brought no batch to the last agreement, and what each waits for.
  std::map<int, std::string> job_waiting_for;
  std::stop_source stop;
  RunSeriesWriter* run_series = nullptr;  // the Engine's: a row per durable checkpoint

  // Guarded by `mutex`.
  std::mutex mutex;
  std::condition_variable changed;
  std::unique_ptr<cache::WindowSequence> sequence;
  std::map<std::string, std::unique_ptr<SpaceClaim>> shard_claims;  // by ledger clip id
  std::map<std::string, std::filesystem::path> shard_paths;
  bool paused = false, pause_acknowledged = false;
  std::string pause_reason, last_error;
  bool done = false, failed = false;
  // What start-up is doing while Engine::connect() runs; empty once it is done.
  std::string starting = "opening the ledger";
  int epoch = 0;  // written by start-up and the trainer thread only
  double last_loss = 0;
  LossTrend loss_trend;
  // What status() shows of the trainer, copied after each step: the trainer
  // itself is the training thread's alone.
  int64_t trained_steps = 0;
  double data_wait_fraction = 0;
  double step_seconds = 0, tokens_per_second = 0, mfu = -1;  // train::Throughput
  int64_t samples = 0;
  int64_t checkpoint_step = -1;
  std::string disk_full_reason;   // set while waiting for the filesystem to have space again
  std::set<std::string> planned;  // clips handed to this epoch's sequence by this process
  uint64_t standing_bytes = 0;    // check_working_set()
  uint64_t fixed_bytes = 0;       // standing_bytes less the chunk of shards
  double decoded_clips = 0;
  std::map<std::string, uint64_t> errors_total;  // failures since start, by ErrorKind name
  // train.backend "external": the consumers section of status and why the
  // budget waits on them, published by the ConsumerFeed.
  nlohmann::json consumers_status;
  std::string consumer_wait_reason;
  Rate download_rate, decode_rate, train_rate;

  // The standing claim for the database's growth; its WAL is truncated at half
  // of it so that db + WAL + SHM stay inside.
  static uint64_t ledger_allowance(const Config& c) { return std::min<uint64_t>(16u << 20, c.storage.budget / 8); }

  void fail(const std::string& message, ErrorKind kind = ErrorKind::internal);
  // A stage that cannot go on stops the whole run cleanly, with the reason in
  // status.last_error, rather than letting an exception end the process.
  void stop_on_error(const std::string& message, ErrorKind kind = ErrorKind::internal);
  // The body of one of the engine's threads (`name`: "producer", "trainer", ...):
  // whatever it throws, other than a cancellation, ends in stop_on_error, and
  // the other threads are woken when it returns.
  void run_stage(const std::string& name, const std::function<void()>& body);
  void disk_full(const std::string& what);
  // Polls until the filesystems keep storage.free_disk_floor plus a margin free.
  void wait_for_disk_space(const std::stop_token& st);
  void wait_while_paused(const std::stop_token& st);
  bool paused_now();
  bool failed_now();
  int current_epoch();
  // What the budget covers, as `du` would count it.
  uint64_t bytes_on_disk() const;
  void new_sequence(const cache::PlanCursor& start);  // with `mutex` held once the threads run
  uint64_t checkpoint_file_bytes() const { return trainer_checkpoint_bytes + 256; }

  // The working set: what the budget must always leave room for, and the
  // limits derived from it (engine_core.cpp, one section).
  void check_working_set();
  uint64_t download_limit();
  uint64_t clip_limit(uint64_t download_bytes);
  uint64_t clip_room() const;
  uint64_t chunk_bytes_cap() const;
};

}  // namespace kaio::daemon
