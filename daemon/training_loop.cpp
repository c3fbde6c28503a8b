// TrainingLoop (training_loop.h): the trainer thread, with the Trainer,
// batch, shard readers and checkpoint ring that only it touches.
#include "daemon/training_loop.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <ctime>
#include <iterator>
#include <map>

#include "common/units.h"
#include "daemon/run_series_writer.h"

namespace kaio::daemon {
namespace fs = std::filesystem;

namespace {

// RankWait's names in status, by its number (exchanged at each agreement).
constexpr const char* kRankWaitNames[] = {
    "", "waiting-data", "waiting-network", "auth-required", "budget-wait", "disk-full", "paused", "stopping"};

}  // namespace

void TrainingLoop::run(const std::stop_token& st) {
  const auto& c = core_.config;
  size_t window_bytes = static_cast<size_t>(c.decode.frames) * c.decode.size * c.decode.size * 3;
  std::vector<uint8_t> batch_bytes(window_bytes * static_cast<size_t>(c.train.batch_size));
  int64_t since_checkpoint = 0;
  train::Collective& job = *core_.job;
  bool stopped_with_the_job = false;  // another rank stopped, not this one
  core_.run_stage("trainer", [&] {
    while (true) {
      if (limits_reached()) {  // also when resumed at train.max_steps; the same step on every rank
        finish();
        break;
      }
      double waited = 0;
      if (!batch_ready_ && !st.stop_requested() && !core_.failed_now() && !core_.paused_now())
        batch_ready_ = fill_batch(st, waited);  // false: paused, stopping, failed or still waiting; held
      own_data_wait_ += waited;
      trainer_->note_data_wait(waited);
      const Turn turn = agree(st);
      if (turn.stop) {
        if (st.stop_requested() || job.world() > 1) checkpoint();
        if (!st.stop_requested() && !core_.failed_now()) {
          stopped_with_the_job = true;
          core_.stop_on_error("another rank of the job stopped: this rank stops with it", ErrorKind::cancelled);
        }
        break;
      }
      if (turn.pause) {
        hold_for_pause(turn);
        continue;
      }
      job_paused_ = false;
      if (!turn.all_ready) {
        if (agree_on_early_checkpoint()) {  // what fill_batch() stopped for
          checkpoint();
          since_checkpoint = 0;
        }
        continue;
      }
      batch_ready_ = false;
      if (turn.windows == 0) {  // every rank is at the end of its part of the epoch
        if (finish_epoch()) break;
        continue;
      }
      step(batch_bytes, window_bytes);
      ++since_checkpoint;
      if (since_checkpoint >= c.train.checkpoint_every || agree_on_early_checkpoint() || limits_reached()) {
        checkpoint();
        since_checkpoint = 0;
      }
    }
  });
  if (core_.failed_now() && !stopped_with_the_job) abort_job_on_error();
}

// What every rank does this turn, from what each one can do: a stop or a
// pause anywhere holds the whole job; a step needs every rank's batch. One
// all-reduce of a few counts and of what each rank without a batch waits
// for (nothing at all alone).
TrainingLoop::Turn TrainingLoop::agree(const std::stop_token& st) {
  const bool stop = st.stop_requested() || core_.failed_now();
  bool paused = false, unacknowledged = false;
  {
    std::lock_guard lock(core_.mutex);
    paused = core_.paused;
    unacknowledged = paused && !core_.pause_acknowledged;
  }
  const int world = core_.job->world();
  std::vector<int64_t> counts(5 + static_cast<size_t>(world), 0);
  counts[0] = stop ? 1 : 0;
  counts[1] = paused ? 1 : 0;
  counts[2] = unacknowledged ? 1 : 0;
  counts[3] = batch_ready_ ? 1 : 0;
  counts[4] = batch_ready_ ? static_cast<int64_t>(batch_.size()) : 0;
  if (!alone()) {
    counts[5 + static_cast<size_t>(core_.job->rank())] = static_cast<int64_t>(wait_code(st));
    auto start = Clock::now();
    core_.job->allreduce_sum(counts.data(), counts.size());
    trainer_->note_data_wait(std::chrono::duration<double>(Clock::now() - start).count());
    publish_rank_waits(counts.data() + 5);
    share_data_waits();
  }
  return {counts[0] > 0, counts[1] > 0, counts[2] > 0, counts[3] == world, counts[4]};
}

// Why this rank's batch is not ready (a RankWait), the most pressing reason
// first, as status derives its state.
RankWait TrainingLoop::wait_code(const std::stop_token& st) {
  using Net = fetch::NetworkStatus::State;
  if (batch_ready_) return RankWait::ready;
  if (st.stop_requested() || core_.failed_now()) return RankWait::stopping;
  if (core_.paused_now()) return RankWait::paused;
  for (auto net : {core_.downloader ? core_.downloader->network_status().state : Net::ok,
                   core_.hub ? core_.hub->network_status().state : Net::ok}) {
    if (net == Net::waiting_network) return RankWait::network;
    if (net == Net::auth_required) return RankWait::auth;
  }
  auto b = core_.budget->status();
  if (b.waiting > 0) return b.floor_reached ? RankWait::disk_full : RankWait::budget;
  return RankWait::data;
}

// Status on every rank names the ranks the job waits for, and why.
void TrainingLoop::publish_rank_waits(const int64_t* codes) {
  std::map<int, std::string> waiting;
  for (int r = 0; r < core_.job->world(); ++r)
    if (codes[r] > 0 && codes[r] < static_cast<int64_t>(std::size(kRankWaitNames)))
      waiting[r] = kRankWaitNames[codes[r]];
  std::lock_guard lock(core_.mutex);
  core_.job_waiting_for = std::move(waiting);
}

// Every rank's time waiting for its own data (not for the other ranks), so
// that status on any rank can name the rank the job waits for.
void TrainingLoop::share_data_waits() {
  std::vector<double> waits(static_cast<size_t>(core_.job->world()), 0.0);
  waits[static_cast<size_t>(core_.job->rank())] = own_data_wait_;
  core_.job->allreduce_sum(waits.data(), waits.size());
  std::lock_guard lock(core_.mutex);
  core_.job_data_wait = std::move(waits);
}

// A pause anywhere in the job: every rank checkpoints once (again when a new
// pause comes before the last was seen to end), the rank that was asked
// acknowledges, and all wait for the next turn.
void TrainingLoop::hold_for_pause(const Turn& turn) {
  if (!job_paused_ || turn.unacknowledged_pause) {
    checkpoint();
    job_paused_ = true;
    std::lock_guard lock(core_.mutex);
    if (core_.paused) core_.pause_acknowledged = true;
    core_.changed.notify_all();
  }
  std::unique_lock lock(core_.mutex);
  core_.changed.wait_for(lock, std::chrono::milliseconds(200));
}

bool TrainingLoop::agree_on_early_checkpoint() {
  int64_t needed = early_checkpoint_needed() ? 1 : 0;
  core_.job->allreduce_sum(&needed, 1);
  return needed > 0;
}

// A rank that cannot go on would leave the others waiting in a collective
// forever: in a job of several ranks it ends them all (the launcher then
// ends the job; a restart resumes every rank from the last checkpoint).
void TrainingLoop::abort_job_on_error() {
  if (alone()) return;
  spdlog::critical("job: rank {} failed: aborting the job's {} ranks", core_.job->rank(), core_.job->world());
  core_.job->abort(1);
}

bool TrainingLoop::limits_reached() const {
  return core_.config.train.max_steps > 0 && trainer_->steps_done() >= core_.config.train.max_steps;
}

// Fills `batch_` in plan order. True when it is complete: full, at the end
// of a chunk, or at the end of the epoch (then possibly empty). False when a
// pause, a stop or a failure came first, in a job after a second of
// waiting, or when an early checkpoint must free space before the next chunk
// can form: the windows taken stay held.
bool TrainingLoop::fill_batch(const std::stop_token& st, double& waited) {
  auto start = Clock::now();
  std::unique_lock lock(core_.mutex);
  bool complete = false;
  while (!st.stop_requested() && !core_.paused && !core_.failed) {
    if (take_ready_windows()) {
      complete = true;
      break;
    }
    if (core_.sequence->epoch_done()) {
      complete = true;
      break;
    }
    int e = core_.epoch;
    lock.unlock();
    auto b = core_.budget->status();
    check_waiter_can_fit(b);
    if (b.waiting > 0) downloads_.evict_prefetch(e);
    // The next chunk's clip may wait for the space of the chunk just trained,
    // when it began to wait after that chunk's last step: only a checkpoint
    // frees it (run() takes it, the batch being empty here).
    bool checkpoint_first = b.waiting > 0 && batch_.empty() && early_checkpoint_needed();
    lock.lock();
    if (core_.failed || checkpoint_first) break;
    // In a job a rank still waiting for its data meets the others every
    // second or so, so that their status says what it waits for.
    if (!alone() && Clock::now() - start >= std::chrono::seconds(1)) break;
    core_.changed.wait_for(lock, std::chrono::milliseconds(100));
  }
  waited = std::chrono::duration<double>(Clock::now() - start).count();
  return complete;
}

// Adds to `batch_` the windows the plan has ready, without waiting; true
// when that makes the batch complete (full, or the end of a chunk). Called
// with core_.mutex held.
bool TrainingLoop::take_ready_windows() {
  auto& sequence = *core_.sequence;
  while (true) {
    if (batch_.empty()) batch_cursor_ = sequence.cursor();
    auto w = sequence.next();
    if (!w) return false;
    batch_.push_back(*w);
    // A batch never spans chunks: the step that ends a chunk can be followed
    // by the checkpoint that frees its shards, which the next chunk's clips
    // may need the space of (waiting for them with a part-filled batch
    // deadlocked). It also keeps batches a pure function of the plan.
    if (static_cast<int>(batch_.size()) >= core_.config.train.batch_size || sequence.current_chunk().empty())
      return true;
  }
}

// Steps on the batch, staged already when it was taken during the last
// step; while the step runs on a GPU, the next batch is taken and staged if
// its windows are ready. Then publishes the figures status shows.
void TrainingLoop::step(std::vector<uint8_t>& batch_bytes, size_t window_bytes) {
  if (!batch_staged_) stage_batch(batch_bytes, window_bytes);
  std::vector<cache::WindowRef> stepping = std::move(batch_);
  batch_.clear();
  batch_staged_ = false;
  trainer_->begin_step();
  stage_next_batch(batch_bytes, window_bytes);
  auto result = trainer_->finish_step();
  int64_t step = trainer_->steps_done();
  {
    std::lock_guard lock(core_.mutex);
    core_.trained_steps = step;
    core_.data_wait_fraction = trainer_->data_wait_fraction();
    const auto speed = trainer_->throughput();
    core_.step_seconds = speed.step_seconds;
    core_.tokens_per_second = speed.tokens_per_second;
    core_.mfu = speed.mfu;
    core_.last_loss = result.loss;
    core_.loss_trend.add(result.loss);
    core_.samples += static_cast<int64_t>(stepping.size());
    core_.train_rate.sample(static_cast<double>(core_.samples));
  }
  if (observer_) {
    for (const auto& w : stepping) observer_->on_window(core_.epoch, step, w.clip, static_cast<int>(w.window));
    observer_->on_step(step, result.loss);
  }
}

// Copies the batch's windows out of their shards and hands them to the trainer.
void TrainingLoop::stage_batch(std::vector<uint8_t>& batch_bytes, size_t window_bytes) {
  for (size_t i = 0; i < batch_.size(); ++i) {
    auto& reader = shard_readers_[batch_[i].clip];
    if (!reader) {
      std::lock_guard lock(core_.mutex);
      reader = std::make_unique<decode::ShardReader>(core_.shard_paths.at(batch_[i].clip));
    }
    std::memcpy(batch_bytes.data() + i * window_bytes, reader->window(static_cast<int>(batch_[i].window)),
                window_bytes);
  }
  trainer_->stage(batch_bytes.data(), static_cast<int>(batch_.size()));
  batch_staged_ = true;
}

// Alone only (a job's ranks agree on each batch first). The batch taken is
// held like any other: a checkpoint before its step resumes before it.
void TrainingLoop::stage_next_batch(std::vector<uint8_t>& batch_bytes, size_t window_bytes) {
  const int64_t max_steps = core_.config.train.max_steps;
  if (!alone() || (max_steps > 0 && trainer_->steps_done() + 1 >= max_steps)) return;
  {
    std::lock_guard lock(core_.mutex);
    if (core_.paused || core_.failed || !take_ready_windows()) return;
  }
  batch_ready_ = true;
  stage_batch(batch_bytes, window_bytes);
}

// Where a restart must go on from: before the held batch, if any.
cache::PlanCursor TrainingLoop::resume_cursor() {
  std::lock_guard lock(core_.mutex);
  return batch_.empty() ? core_.sequence->cursor() : batch_cursor_;
}

// A reservation larger than what the fixed working set leaves free would
// wait forever (reserve() refuses those at once; this catches one that
// waited from before a reload lowered the budget): stop with the sizes
// instead of sitting in budget-wait.
void TrainingLoop::check_waiter_can_fit(const cache::BudgetStatus& b) {
  uint64_t fixed = core_.fixed_bytes;
  if (b.waiting == 0 || b.oldest_waiting_bytes + fixed <= b.budget) return;
  cache::check_budget_fits(b.budget, b.oldest_waiting_bytes + fixed,
                           b.oldest_waiting_what + " (" + format_size(b.oldest_waiting_bytes) +
                               ") beside the fixed working set of " + format_size(fixed));
}

bool TrainingLoop::early_checkpoint_needed() {
  auto status = core_.budget->status();
  if (status.waiting == 0) return false;
  uint64_t freeable = core_.retention.freeable_bytes(resume_cursor(), *core_.budget);
  return cache::should_checkpoint_early(status, status.oldest_waiting_bytes, freeable);
}

// Rows of clips the checkpoint covered shrink to what exactly-once needs,
// so the ledger stays inside its allowance. Outside any ledger transaction.
void TrainingLoop::compact_ledger() {
  uint64_t allowance = EngineCore::ledger_allowance(core_.config);
  try {
    auto compacted = core_.ledger.compact_after_checkpoint();
    if (compacted.bytes_peak > allowance)
      spdlog::warn("ledger: {} on disk, over its allowance of {}", format_size(compacted.bytes_peak),
                   format_size(allowance));
  } catch (const Error& err) {  // the next checkpoint tries again
    spdlog::warn("ledger: compaction after the checkpoint failed: {}", err.what());
  }
}

// Writes a checkpoint of the current step and resume_cursor(), then deletes
// what it covers. In a job of several ranks every rank calls it at the same
// step (it holds collectives). A second call at the same step and position does nothing;
// at the same step with a later position (an epoch's end) the file is
// replaced in place, so the rotation never removes the file just written.
void TrainingLoop::checkpoint() {
  cache::PlanCursor cursor = resume_cursor();
  int64_t step = trainer_->steps_done();
  bool same_step = step == core_.checkpoint_step;
  // In a job every rank writes when one has to: the barrier below is everyone's.
  int64_t to_write = same_step && cursor == checkpoint_cursor_ ? 0 : 1;
  core_.job->allreduce_sum(&to_write, 1);
  if (to_write == 0) return;
  fs::path path = core_.checkpoint_dir / ("step-" + std::to_string(step) + ".kaiockpt");
  write_checkpoint(path, step, cursor);
  // Each rank deletes what its checkpoint covers only once every rank's is
  // durable: the job's checkpoint is the step all ranks hold.
  core_.job->barrier();
  {
    std::lock_guard lock(core_.mutex);
    if (!same_step) ring_.rotate(path);
    core_.checkpoint_step = step;
    checkpoint_cursor_ = cursor;
  }
  // Marking the clips deleted is a ledger write too; on a full disk it is
  // waited out and done again (it is idempotent: clips already gone stay so).
  while (true) {
    try {
      release(cursor, step);
      return;
    } catch (const Error& err) {
      if (err.kind() != ErrorKind::disk_full) throw;
      core_.disk_full("releasing what checkpoint step " + std::to_string(step) + " covers: " + err.what());
      core_.wait_for_disk_space(core_.stop.get_token());
    }
  }
}

// The file and its ledger row (with the training position, in one
// transaction); a full disk is waited out and the file written again.
void TrainingLoop::write_checkpoint(const fs::path& path, int64_t step, const cache::PlanCursor& cursor) {
  std::string extra = cursor.to_string();
  if (trainer_->checkpoint_bytes() + extra.size() > core_.checkpoint_file_bytes())
    throw Error(ErrorKind::internal, "checkpoint larger than its claim");
  while (true) {
    try {
      trainer_->save_checkpoint(path, extra);
      core_.ledger.transaction([&] {
        core_.ledger.add_checkpoint(
            {step, path, trainer_->checkpoint_bytes() + extra.size(), static_cast<int64_t>(::time(nullptr)), extra});
        core_.ledger.save_position({cursor.epoch, step, core_.samples, extra});
      });
      return;
    } catch (const Error& err) {
      if (err.kind() != ErrorKind::disk_full) throw;
      fs::remove(path);
      core_.disk_full("checkpoint " + path.string() + ": " + err.what());
      core_.wait_for_disk_space(core_.stop.get_token());
    }
  }
}

// Deletes the shards the durable checkpoint at `cursor` covers.
void TrainingLoop::release(const cache::PlanCursor& cursor, int64_t step) {
  auto released = core_.retention.release_after_checkpoint(cursor);
  compact_ledger();
  {
    std::lock_guard lock(core_.mutex);
    for (const auto& id : released.clips) {
      shard_readers_.erase(id);      // unmapped: a deleted shard holds no space
      core_.shard_claims.erase(id);  // the shard is already unlinked
      core_.shard_paths.erase(id);
    }
  }
  spdlog::info("checkpoint step {} durable ({}), loss {:.4f}, {} clips deleted ({})", step, cursor.to_string(),
               core_.last_loss, released.clips.size(), format_size(released.shard_bytes));
  if (core_.run_series) core_.run_series->checkpoint();
  core_.changed.notify_all();
}

// Returns true when training is over.
bool TrainingLoop::finish_epoch() {
  int next = core_.current_epoch() + 1;
  if (next >= core_.config.train.epochs) {
    finish();
    return true;
  }
  checkpoint();
  {
    std::lock_guard lock(core_.mutex);
    core_.epoch = next;
    core_.new_sequence(cache::PlanCursor{next, 0, 0, 0, 0, 0, 0});
    core_.planned.clear();
  }
  spdlog::info("epoch {} starts", next);
  core_.changed.notify_all();
  return false;
}

void TrainingLoop::finish() {
  checkpoint();
  std::lock_guard lock(core_.mutex);
  core_.done = true;
  spdlog::info("training done: step {}, loss {:.4f}", trainer_->steps_done(), core_.last_loss);
  core_.changed.notify_all();
}

}  // namespace kaio::daemon
