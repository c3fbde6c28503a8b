// ConsumerFeed's requests (consumer_feed.h): attach, next, commit and close,
// each on the data socket connection's own thread, under the core's mutex
// (commit also under commit_mutex_, and writes the ledger outside the core's).
#include <spdlog/spdlog.h>

#include <ctime>

#include "common/error.h"
#include "daemon/consumer_feed.h"

namespace kaio::daemon {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int64_t now_unix() {
  return static_cast<int64_t>(::time(nullptr));
}

[[noreturn]] void refuse(const std::string& message) {
  throw Error(ErrorKind::usage, message);
}

}  // namespace

json ConsumerFeed::attach(WorkerCursor& w, const json& args, pid_t pid) {
  if (!args.is_object()) refuse("attach needs args: consumer, rank, world, worker, workers, batch_size");
  auto name_it = args.find("consumer");
  std::string name = name_it != args.end() && name_it->is_string() ? name_it->get<std::string>() : "";
  check_consumer_name(name);
  int world = static_cast<int>(int_arg(args, "world", 1, 65536, 1));
  int rank = static_cast<int>(int_arg(args, "rank", 0, INT32_MAX, 0));
  int workers = static_cast<int>(int_arg(args, "workers", 1, 65536, 1));
  int worker = static_cast<int>(int_arg(args, "worker", 0, INT32_MAX, 0));
  if (rank >= world) refuse("rank " + std::to_string(rank) + " is not below world " + std::to_string(world));
  if (worker >= workers)
    refuse("worker " + std::to_string(worker) + " is not below workers " + std::to_string(workers));
  auto batch_it = args.find("batch_size");
  if (batch_it != args.end() && !batch_it->is_null() &&
      !(batch_it->is_number_integer() && *batch_it >= 1 && *batch_it <= 4096))
    refuse("batch_size must be 1 to 4096");
  int batch = batch_it == args.end() || batch_it->is_null() ? 1 : batch_it->get<int>();
  auto from_it = args.find("from");
  bool has_from = from_it != args.end() && !from_it->is_null();
  Token from = has_from ? token_arg(*from_it, "from") : Token{};

  std::lock_guard lock(core_.mutex);
  if (w.attached) refuse("this connection is attached already (one worker per connection)");
  auto* group = table_.find(name);
  if (group && group->world != world)
    refuse("consumer \"" + name + "\" has world " + std::to_string(group->world) + "; attaching with world " +
           std::to_string(world) + " is not supported (start a new consumer name)");
  if (!group) {
    // A consumer created later starts at the first row kaiod still holds.
    auto oldest = table_.oldest_uncommitted();
    Token floor = table_.empty() ? Token{core_.epoch, base_} : Token{oldest.epoch, oldest.global};
    Token start{floor.epoch, (floor.window + world - 1) / world};
    core_.ledger.add_consumer(name, world, start.epoch, start.window, now_unix());
    group = &table_.create(name, world, start, now_unix());
    spdlog::info("data plane: consumer {} created with world {}, starting at {}", name, world, start.to_string());
  }
  auto& r = group->ranks[static_cast<size_t>(rank)];
  if (auto slot = r.workers.find(worker); slot != r.workers.end())
    refuse("consumer \"" + name + "\" rank " + std::to_string(rank) + " worker " + std::to_string(worker) +
           " is already attached (pid " + std::to_string(slot->second) + ")");
  if (!has_from) from = r.committed;
  // Worker k starts at the k-th batch from `from`: a worker that attaches late
  // may find the batches before its own received and committed already.
  if (Token{from.epoch, (from.window / batch + worker) * batch} < r.committed)
    refuse("token " + from.to_string() + " of consumer \"" + name + "\" rank " + std::to_string(rank) +
           " is behind its committed token " + r.committed.to_string() + ": those windows are deleted");
  if (from.window % batch != 0)
    refuse("token " + from.to_string() + " is not at a batch boundary (batch_size " + std::to_string(batch) + ")");
  r.workers[worker] = pid;
  r.delivered = std::max(r.delivered, from);
  w.attached = true;
  w.consumer = name;
  w.rank = rank;
  w.world = world;
  w.worker = worker;
  w.workers = workers;
  w.batch_size = batch;
  w.epoch = from.epoch;
  w.batch = from.window / batch + worker;
  w.in_batch = 0;
  spdlog::info("data plane: consumer {} rank {}/{} worker {}/{} (pid {}) attached from {}", name, rank, world, worker,
               workers, pid, from.to_string());
  const auto& d = core_.config.decode;
  return {{"from", from.to_json()},
          {"committed", r.committed.to_json()},
          {"frames", d.frames},
          {"height", d.size},
          {"width", d.size},
          {"channels", 3},
          {"epochs", core_.config.train.epochs}};
}

json ConsumerFeed::next(WorkerCursor& w, const json& args, std::vector<Fd>& fds) {
  if (!args.is_object()) refuse("next needs args");
  int64_t max = int_arg(args, "max", 1, 4096, w.batch_size);
  int64_t wait_ms = int_arg(args, "wait_ms", 0, 30000, 1000);
  auto deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
  std::unique_lock lock(core_.mutex);
  if (auto u = args.find("unmapped"); u != args.end()) unmapped(w, *u);
  if (!w.attached) refuse("attach first");
  json windows = json::array();
  json reply = {{"end_of_epoch", false}, {"done", false}, {"waiting", ""}};
  const int epochs = core_.config.train.epochs;
  while (true) {
    if (w.epoch >= epochs) {
      reply["done"] = true;
      break;
    }
    auto& r = table_.rank(w.consumer, w.rank);
    int64_t j = w.batch * w.batch_size + w.in_batch;
    int64_t per_rank = w.epoch == core_.epoch ? rank_windows(w.world) : -1;
    // kaiod starts an epoch only once every rank committed the last one's end,
    // so a worker still in an earlier epoch (attached from its end just
    // before the commit that moved kaiod on) has nothing left in it.
    if (w.epoch < core_.epoch || (per_rank >= 0 && j >= per_rank)) {
      if (!windows.empty()) break;  // the short last batch goes first
      reply["end_of_epoch"] = true;
      ++w.epoch;
      w.batch = w.worker;
      w.in_batch = 0;
      r.delivered = std::max(r.delivered, Token{w.epoch, 0});
      reply["done"] = w.epoch >= epochs;
      break;
    }
    if (w.epoch == core_.epoch && take_until((j + 1) * w.world - 1)) {
      const auto& t = taken_.at(static_cast<size_t>(j * w.world + w.rank - base_));
      windows.push_back(describe(w, j, t, fds));
      r.delivered = std::max(r.delivered, Token{w.epoch, j + 1});
      ++r.windows_delivered;
      if (++w.in_batch == w.batch_size) {  // a reply never spans two batches
        w.batch += w.workers;
        w.in_batch = 0;
        break;
      }
      if (static_cast<int64_t>(windows.size()) >= max) break;
      continue;
    }
    if (!windows.empty() || core_.stop.stop_requested()) break;
    if (Clock::now() >= deadline) {
      reply["waiting"] = waiting_reason(w);
      break;
    }
    core_.changed.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(200)));
  }
  reply["windows"] = std::move(windows);
  reply["fds"] = fds.size();
  return reply;
}

// With the core's mutex held.
void ConsumerFeed::unmapped(WorkerCursor& w, const json& clips) {
  if (!clips.is_array()) refuse("unmapped must be an array of clip ids");
  for (const auto& c : clips) {
    if (!c.is_string()) refuse("unmapped must be an array of clip ids");
    if (w.clips_sent.erase(c.get<std::string>())) drop_holder(w.connection, c.get<std::string>());
  }
}

// With the core's mutex held: a deleted shard's claim goes with its last holder.
void ConsumerFeed::drop_holder(uint64_t connection, const std::string& clip) {
  auto it = holders_.find(clip);
  if (it == holders_.end()) return;
  it->second.erase(connection);
  if (!it->second.empty()) return;
  holders_.erase(it);
  if (lingering_.erase(clip)) core_.changed.notify_all();
}

void ConsumerFeed::close(WorkerCursor& w) {
  std::string name;
  int rank = 0;
  {
    std::lock_guard lock(core_.mutex);
    for (const auto& clip : w.clips_sent) drop_holder(w.connection, clip);
    w.clips_sent.clear();
    if (!w.attached) return;
    w.attached = false;
    auto& r = table_.rank(w.consumer, w.rank);
    r.workers.erase(w.worker);
    r.last_seen_unix = now_unix();
    name = w.consumer;
    rank = w.rank;
    spdlog::info("data plane: consumer {} rank {} worker {} detached{}", name, rank, w.worker,
                 r.workers.empty() ? " (no worker of the rank attached)" : "");
  }
  core_.ledger.touch_consumer(name, rank, now_unix());
}

json ConsumerFeed::commit(const json& args) {
  if (!args.is_object()) refuse("commit needs args: consumer, rank, token");
  auto name_it = args.find("consumer");
  std::string name = name_it != args.end() && name_it->is_string() ? name_it->get<std::string>() : "";
  check_consumer_name(name);
  int rank = static_cast<int>(int_arg(args, "rank", 0, INT32_MAX, 0));
  auto token_it = args.find("token");
  Token token = token_arg(token_it == args.end() ? json() : *token_it, "token");
  std::lock_guard serial(commit_mutex_);
  state::ConsumerRank row;
  state::DataPlanePosition resume;
  cache::PlanCursor durable;
  int64_t delta = 0;
  {
    std::lock_guard lock(core_.mutex);
    auto& r = table_.rank(name, rank);
    int world = table_.find(name)->world;
    auto normal = [&](Token t) {  // the epoch's end reads as the next epoch's start
      int64_t per_rank = t.epoch == core_.epoch ? rank_windows(world) : -1;
      return per_rank >= 0 && t.window >= per_rank ? Token{t.epoch + 1, 0} : t;
    };
    token = normal(token);
    std::string who = "consumer \"" + name + "\" rank " + std::to_string(rank);
    if (token < r.committed)
      refuse("commit of " + who + " goes backwards: " + token.to_string() + " is behind the committed " +
             r.committed.to_string());
    if (token == r.committed) return {{"committed", token.to_json()}, {"released_clips", 0}};
    if (normal(r.delivered) < token)
      refuse("commit of " + who + " at " + token.to_string() + ": only " + std::to_string(r.delivered.window) +
             " windows were delivered to that rank" +
             (r.delivered.epoch != token.epoch ? " in epoch " + std::to_string(r.delivered.epoch) : ""));
    Token before = r.committed;
    r.committed = token;  // to find the new oldest; put back should the ledger fail
    auto oldest = table_.oldest_uncommitted();
    r.committed = before;
    auto [global, cursor] = cursor_at(oldest.epoch, oldest.global);
    durable = cursor;
    row = {name, world, rank, token.epoch, token.window, now_unix()};
    resume = {cursor.epoch, global, cursor.to_string()};
    delta = token.epoch == before.epoch ? token.window - before.window
                                        : std::max<int64_t>(0, rank_windows(world) - before.window) + token.window;
  }
  core_.ledger.commit_consumer(row, resume);  // durable before the reply
  size_t released = 0;
  {
    std::lock_guard lock(core_.mutex);
    auto& r = table_.rank(name, rank);
    r.committed = token;
    r.windows_committed += delta;
    r.last_seen_unix = row.last_seen_unix;
    if (resume.epoch == core_.epoch && resume.global > base_) {  // no one comes back for these
      auto n = std::min<int64_t>(resume.global - base_, static_cast<int64_t>(taken_.size()));
      taken_.erase(taken_.begin(), taken_.begin() + n);
      base_ += n;
    }
  }
  released = release(durable);
  core_.changed.notify_all();
  return {{"committed", token.to_json()}, {"released_clips", released}};
}

// Deletes the shards every consumer committed past; a shard some connection
// still maps keeps its claim until it is unmapped. Under commit_mutex_ only.
size_t ConsumerFeed::release(const cache::PlanCursor& durable) {
  auto released = core_.retention.release_after_checkpoint(durable);
  if (released.clips.empty()) return 0;
  try {
    core_.ledger.compact_after_checkpoint();
  } catch (const Error& err) {  // the next commit tries again
    spdlog::warn("ledger: compaction after a commit failed: {}", err.what());
  }
  std::lock_guard lock(core_.mutex);
  for (const auto& id : released.clips) {
    auto claim = std::move(core_.shard_claims[id]);
    core_.shard_claims.erase(id);
    core_.shard_paths.erase(id);
    meta_.erase(id);
    if (holders_.count(id)) lingering_[id] = std::move(claim);  // else the claim goes here, after the unlink
  }
  return released.clips.size();
}

}  // namespace kaio::daemon
