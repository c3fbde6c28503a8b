// EngineCore's helpers (engine_core.h): the shared waits and error paths
// every thread uses, and the working-set section, from which the download,
// shard and chunk limits derive. Each takes the core's `mutex` itself
// unless its comment says it is called with it held.
#include "daemon/engine_core.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/fs.h"
#include "common/log.h"
#include "common/units.h"
#include "decode/shard.h"
#include "decode/video.h"

namespace kaio::daemon {
namespace fs = std::filesystem;

void Rate::sample(double total) {
  auto now = Clock::now();
  points_.push_back({now, total});
  while (points_.size() > 2 && now - points_.front().first > std::chrono::seconds(30)) points_.pop_front();
}

double Rate::per_second() const {
  if (points_.size() < 2) return 0;
  double dt = std::chrono::duration<double>(points_.back().first - points_.front().first).count();
  return dt > 0 ? (points_.back().second - points_.front().second) / dt : 0;
}

namespace {

state::Ledger open_ledger(const Config& c) {
  fs::create_directories(c.storage.state_dir);
  fs::create_directories(c.storage.cache_dir);
  state::LedgerOptions options;
  options.wal_limit_bytes = EngineCore::ledger_allowance(c) / 2;
  return state::Ledger::open(c.storage.state_dir, options);
}

}  // namespace

EngineCore::EngineCore(Config c)
    : config(std::move(c)),
      work_dir(config.storage.cache_dir / "work"),
      download_dir(config.storage.cache_dir / "downloads"),
      checkpoint_dir(config.storage.state_dir / "checkpoints"),
      ledger(open_ledger(config)) {}

void EngineCore::fail(const std::string& message, ErrorKind kind) {
  std::lock_guard lock(mutex);
  last_error = redact(message);
  ++errors_total[std::string(to_string(kind))];
  spdlog::error("{}", last_error);
}

void EngineCore::stop_on_error(const std::string& message, ErrorKind kind) {
  fail(message, kind);
  std::lock_guard lock(mutex);
  failed = true;
}

void EngineCore::run_stage(const std::string& name, const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& err) {
    if (err.kind() != ErrorKind::cancelled) stop_on_error(name + " stopped: " + err.what(), err.kind());
  } catch (const std::exception& err) {
    stop_on_error(name + " stopped by an internal error: " + err.what());
  }
  changed.notify_all();
}

void EngineCore::disk_full(const std::string& what) {
  std::lock_guard lock(mutex);
  disk_full_reason = redact(what);
  last_error = disk_full_reason;
  ++errors_total[std::string(to_string(ErrorKind::disk_full))];
  spdlog::error("disk full: {}; waiting for space on {}", disk_full_reason, config.storage.cache_dir.string());
}

void EngineCore::wait_for_disk_space(const std::stop_token& st) {
  constexpr uint64_t kMargin = 1u << 20;
  auto free_on = [](const fs::path& p) {
    std::error_code ec;
    auto info = fs::space(p, ec);
    return ec ? 0 : static_cast<uint64_t>(info.available);
  };
  while (!st.stop_requested()) {
    uint64_t free = std::min(free_on(config.storage.cache_dir), free_on(config.storage.state_dir));
    if (free >= config.storage.free_disk_floor + kMargin) break;
    std::unique_lock lock(mutex);
    changed.wait_for(lock, std::chrono::seconds(1));
  }
  if (st.stop_requested()) throw Error(ErrorKind::cancelled, "stopping");
  std::lock_guard lock(mutex);
  spdlog::info("disk space is back on {}: going on", config.storage.cache_dir.string());
  disk_full_reason.clear();
}

void EngineCore::wait_while_paused(const std::stop_token& st) {
  std::unique_lock lock(mutex);
  changed.wait(lock, [&] { return !paused || st.stop_requested(); });
}

bool EngineCore::paused_now() {
  std::lock_guard lock(mutex);
  return paused;
}

bool EngineCore::failed_now() {
  std::lock_guard lock(mutex);
  return failed;
}

int EngineCore::current_epoch() {
  std::lock_guard lock(mutex);
  return epoch;
}

uint64_t EngineCore::bytes_on_disk() const {
  const auto& st = config.storage;
  return disk_usage(st.cache_dir) + (st.state_dir == st.cache_dir ? 0 : disk_usage(st.state_dir));
}

void EngineCore::new_sequence(const cache::PlanCursor& start) {
  sequence = std::make_unique<cache::WindowSequence>(
      config.train.seed, config.train.shuffle_clips, config.train.repeat, start,
      [this](int e, int64_t chunk, const std::vector<cache::ClipWindows>& clips) {
        retention.chunk_formed(e, chunk, clips);
      },
      chunk_bytes_cap());
}

// ---------- working set ----------

// The least the budget must hold for an epoch to finish: what stays for
// good (files found at start, the ledger allowance, keep+1 checkpoints) and
// room for a chunk at its byte cap that holds a full batch of one-window
// clips (or K of them), beside which one clip of that size, its member and
// its shard, still fits (clip_limit). Below it the pipeline could only wait,
// or fail every clip, so start-up refuses with the parts named. Files that do
// not fit beside it are decoded while they stream (download_limit).
void EngineCore::check_working_set() {
  auto b = budget->status();
  // Downloads kept from the last run are on disk but go once decoded.
  uint64_t kept_downloads = std::min(b.baseline, disk_usage(download_dir));
  uint64_t held = b.baseline - kept_downloads + b.ledger_allowance;
  // Shards kept from the last run are trained first, within the room (they
  // fitted beside the rest before); only a budget lowered since can be too
  // small for them. (Checkpoints kept from it fill the checkpoint slots.)
  uint64_t kept_shards = 0;
  for (const auto& [id, claim] : shard_claims) kept_shards += claim->bytes();
  int slots = config.train.keep_checkpoints + 1;
  uint64_t checkpoints = budget->on_disk_bytes(checkpoint_file_bytes()) * static_cast<uint64_t>(slots);
  uint64_t one_window = budget->on_disk_bytes(decode::shard_bytes(decode::from_config(config.decode), 1, 256));
  int windows = std::max({1, config.train.shuffle_clips, config.train.batch_size});
  uint64_t chunk = one_window * static_cast<uint64_t>(windows);
  fixed_bytes = held + checkpoints;
  // The cap is a quarter of the room beside the fixed set (chunk_bytes_cap);
  // the clip beside a full chunk needs its shard and a member of that size.
  uint64_t room = std::max(4 * chunk, 4 * (2 * one_window + budget->on_disk_bytes(1) * windows) / 3);
  standing_bytes = fixed_bytes + room;
  const bool kept_over_room = kept_shards > room;
  cache::check_budget_fits(
      config.storage.budget, kept_over_room ? fixed_bytes + kept_shards : standing_bytes,
      format_size(held) + " already on disk and kept for the ledger, " + std::to_string(slots) + " checkpoints of " +
          format_size(checkpoint_file_bytes()) + ", and four times a chunk of " + std::to_string(windows) +
          " one-window clips' shards (train.batch_size, train.shuffle_clips; a chunk may take a quarter of the room)" +
          (kept_over_room ? " (" + format_size(kept_shards) + " of shards kept from the last run)" : ""));
}

// Files up to this size are downloaded whole; larger ones are decoded while
// they stream. A downloaded file leaves at least half the clip room free, so
// the clips it holds are not failed for its sake.
uint64_t EngineCore::download_limit() {
  std::lock_guard lock(mutex);  // reload() changes the budget
  uint64_t threshold = config.storage.stream_threshold ? config.storage.stream_threshold : config.storage.budget / 4;
  return std::min(threshold, clip_room() / 2);
}

// The most one clip, its member and its shard together, may hold while a
// file whose download holds `download_bytes` on disk is decoded: the clip
// room less the download.
uint64_t EngineCore::clip_limit(uint64_t download_bytes) {
  std::lock_guard lock(mutex);  // reload() changes the budget
  uint64_t room = clip_room();
  return room > download_bytes ? room - download_bytes : 1;
}

// What the budget leaves for one clip beside the fixed working set and a
// chunk at its byte cap. The clip that completes a chunk decodes beside the
// chunk's earlier shards (under the cap), which only training after that
// clip frees; a clip that could not fit beside them would wait for good, so
// clip_limit() fails it alone at once. The cap counts the shards' file
// sizes; on disk each of the chunk's other clips (fewer than K, each of at
// least one window) may take up to a block more. Caller holds `mutex`.
uint64_t EngineCore::clip_room() const {
  uint64_t cap = chunk_bytes_cap();
  uint64_t one_window = decode::shard_bytes(decode::from_config(config.decode), 1, 0);
  uint64_t others = std::min<uint64_t>(static_cast<uint64_t>(std::max(0, config.train.shuffle_clips - 1)),
                                       cap / std::max<uint64_t>(1, one_window) + 1);
  uint64_t held = fixed_bytes + cap + budget->on_disk_bytes(1) * others;
  return config.storage.budget > held ? config.storage.budget - held : 0;
}

// A chunk closes once its shards reach a quarter of the room beside the
// fixed working set, so that the chunk being formed, the clip being decoded,
// its member and its download all fit (clip_limit() fails a clip that does
// not): training, which alone frees shards, never waits for a clip that
// waits for space. A function of the budget only, so chunks are the same in
// every run with that budget.
uint64_t EngineCore::chunk_bytes_cap() const {
  return config.storage.budget > fixed_bytes ? (config.storage.budget - fixed_bytes) / 4 : 1;
}

}  // namespace kaio::daemon
