// ConsumerFeed (consumer_feed.h): attach, next, commit and close on the data
// socket's connection threads, epochs and the budget-wait reason on run()'s.
#include "daemon/consumer_feed.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <ctime>

#include "common/error.h"
#include "decode/shard.h"

namespace kaio::daemon {
namespace {

using nlohmann::json;

int64_t now_unix() {
  return static_cast<int64_t>(::time(nullptr));
}

}  // namespace

ConsumerFeed::ConsumerFeed(EngineCore& core, Downloads& downloads) : core_(core), downloads_(downloads) {
  table_.load(core_.ledger.consumers());
  auto resume = core_.ledger.data_plane_position();
  if (!resume.cursor.empty() && resume.epoch == core_.epoch) base_ = resume.global;
}

void ConsumerFeed::run(const std::stop_token& st) {
  core_.run_stage("consumer feed", [&] {
    while (!st.stop_requested() && !core_.failed_now()) {
      note_budget_wait();
      next_epoch_if_all_committed();
      std::unique_lock lock(core_.mutex);
      publish_locked();
      if (core_.done) break;
      core_.changed.wait_for(lock, std::chrono::milliseconds(200));
    }
  });
}

// While the budget waits, only commits free space: say whose.
void ConsumerFeed::note_budget_wait() {
  auto b = core_.budget->status();
  bool waiting = b.waiting > 0 && !b.floor_reached;
  if (waiting) downloads_.evict_prefetch(core_.current_epoch());
  std::lock_guard lock(core_.mutex);
  std::string reason;
  if (waiting) {
    auto oldest = table_.oldest_uncommitted();
    if (!oldest.consumer.empty()) reason = "waiting for consumer " + oldest.consumer + " to commit";
  }
  if (reason != budget_wait_reason_ && !reason.empty())
    spdlog::info("budget-wait: {} ({} waits)", reason, b.oldest_waiting_what);
  budget_wait_reason_ = reason;
  core_.consumer_wait_reason = reason;
}

// With the core's mutex held: what status shows of the consumers.
void ConsumerFeed::publish_locked() {
  auto consumers = table_.to_json(now_unix());
  for (auto& c : consumers) {
    int world = c["world"].get<int>();
    c["dropped_windows"] = epoch_windows_ < 0 ? 0 : epoch_windows_ % world;
  }
  core_.consumers_status = std::move(consumers);
}

// The next epoch starts once every rank of every consumer committed the
// whole epoch: its clips are decoded again into the same ledger rows, so
// none of this epoch's shards may still be held. (A kill right after the
// last commit leaves them: they go here, after the restart.)
void ConsumerFeed::next_epoch_if_all_committed() {
  int next = 0;
  {
    std::lock_guard lock(core_.mutex);
    next = core_.epoch + 1;
    if (table_.empty() || core_.done || !table_.all_committed({next, 0})) return;
  }
  {
    std::lock_guard serial(commit_mutex_);
    release(cache::PlanCursor{next, 0, 0, 0, 0, 0, 0});
  }
  std::lock_guard lock(core_.mutex);
  if (next >= core_.config.train.epochs) {
    core_.done = true;
    spdlog::info("data plane done: every consumer committed epoch {} of {}", core_.epoch, core_.config.train.epochs);
  } else {
    core_.epoch = next;
    core_.new_sequence(cache::PlanCursor{next, 0, 0, 0, 0, 0, 0});
    core_.planned.clear();
    taken_.clear();
    base_ = 0;
    epoch_windows_ = -1;
    spdlog::info("epoch {} starts: every consumer committed epoch {}", next, next - 1);
  }
  core_.changed.notify_all();
}

// With the core's mutex held: takes windows from the sequence until `global`
// is taken. False while it is not decoded yet or past the epoch's end.
bool ConsumerFeed::take_until(int64_t global) {
  auto& sequence = *core_.sequence;
  while (base_ + static_cast<int64_t>(taken_.size()) <= global) {
    if (epoch_windows_ >= 0) return false;
    auto cursor = sequence.cursor();
    auto w = sequence.next();
    if (!w) {
      if (sequence.epoch_done()) epoch_windows_ = base_ + static_cast<int64_t>(taken_.size());
      return false;
    }
    taken_.push_back({*w, cursor});
  }
  return true;
}

int64_t ConsumerFeed::rank_windows(int world) const {
  return epoch_windows_ < 0 ? -1 : epoch_windows_ / world;
}

// With the core's mutex held: the window metadata of a clip's shard, read once.
const ConsumerFeed::ClipMeta& ConsumerFeed::meta(const std::string& clip) {
  auto it = meta_.find(clip);
  if (it != meta_.end()) return it->second;
  const auto& path = core_.shard_paths.at(clip);
  decode::ShardReader reader(path);
  ClipMeta m;
  m.shard_bytes = std::filesystem::file_size(path);
  m.window_bytes = reader.windows() > 1 ? static_cast<uint64_t>(reader.window(1) - reader.window(0))
                                        : (reader.frames() * reader.frame_bytes() + 63) / 64 * 64;
  for (int i = 0; i < reader.windows(); ++i) m.windows.push_back(reader.info(i));
  return meta_.emplace(clip, std::move(m)).first->second;
}

json ConsumerFeed::describe(WorkerCursor& w, int64_t j, const Taken& t, std::vector<Fd>& fds) {
  const auto& m = meta(t.ref.clip);
  json fd_index = nullptr;
  if (!w.clips_sent.count(t.ref.clip)) {
    const auto& path = core_.shard_paths.at(t.ref.clip);
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) throw_errno("open shard of clip " + t.ref.clip, path.string());
    fds.push_back(std::move(fd));
    fd_index = fds.size() - 1;
    w.clips_sent.insert(t.ref.clip);
    holders_[t.ref.clip].insert(w.connection);
  }
  const auto& info = m.windows.at(static_cast<size_t>(t.ref.window));
  return {{"epoch", w.epoch},
          {"index", j},
          {"global", j * w.world + w.rank},
          {"clip", t.ref.clip},
          {"window", t.ref.window},
          {"fd", fd_index},
          {"shard_bytes", m.shard_bytes},
          {"offset", decode::kShardHeaderBytes + static_cast<uint64_t>(t.ref.window) * m.window_bytes},
          {"archive", info.source_file},
          {"member", info.member},
          {"time", info.first_time},
          {"caption", info.caption}};
}

std::string ConsumerFeed::waiting_reason(const WorkerCursor& w) const {
  if (w.epoch > core_.epoch) {
    for (const auto& [name, group] : table_.groups())
      for (size_t r = 0; r < group.ranks.size(); ++r)
        if (group.ranks[r].committed < Token{w.epoch, 0})
          return "waiting for rank " + std::to_string(r) + " of consumer " + name + " to finish epoch " +
                 std::to_string(w.epoch - 1);
  }
  if (core_.paused) return "paused: " + core_.pause_reason;
  if (!budget_wait_reason_.empty()) return "budget-wait: " + budget_wait_reason_;
  if (core_.failed) return "error: " + core_.last_error;
  return "decoding the next clips";
}

// With the core's mutex held: the plan cursor at (epoch, global), clamped to
// the windows taken (a later one is not known yet: the position stays back).
std::pair<int64_t, cache::PlanCursor> ConsumerFeed::cursor_at(int epoch, int64_t global) const {
  if (epoch > core_.epoch) return {0, cache::PlanCursor{epoch, 0, 0, 0, 0, 0, 0}};
  int64_t end = base_ + static_cast<int64_t>(taken_.size());
  int64_t g = epoch < core_.epoch ? base_ : std::clamp(global, base_, end);
  if (g < end) return {g, taken_[static_cast<size_t>(g - base_)].cursor};
  return {g, core_.sequence->cursor()};
}

}  // namespace kaio::daemon
