#pragma once
// The external backend's stand-in for the trainer thread (train.backend
// "external", docs/data-plane.md): it takes windows from the core's
// sequence in plan order as consumers ask for them, gives rank r of a world
// W the globals j*W + r, records commits in the ledger before replying, and
// deletes the shards every consumer has committed past (the "checkpoint" is
// the oldest uncommitted window's plan cursor). A deleted shard's budget
// claim stays until every connection given its descriptor unmapped it.
//
// Threads: request handlers (the data socket's connection threads) and
// run() (epochs, done, the budget-wait reason). Everything here is guarded by
// the core's mutex; commits are also serialised by commit_mutex_, taken first.
#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <stop_token>
#include <string>
#include <vector>

#include "common/fd.h"
#include "daemon/consumer_table.h"
#include "daemon/downloads.h"
#include "daemon/engine_core.h"
#include "decode/shard.h"

namespace kaio::daemon {

// One connection's worker, as its attach set it up.
struct WorkerCursor {
  uint64_t connection = 0;
  bool attached = false;
  std::string consumer;
  int rank = 0, world = 1, worker = 0, workers = 1, batch_size = 1;
  int epoch = 0;
  int64_t batch = 0;                 // the batch being read
  int64_t in_batch = 0;              // windows of it handed out
  std::set<std::string> clips_sent;  // clips whose shard descriptor this connection got
};

class ConsumerFeed {
 public:
  ConsumerFeed(EngineCore& core, Downloads& downloads);

  void run(const std::stop_token& st);

  nlohmann::json attach(WorkerCursor& w, const nlohmann::json& args, pid_t pid);
  // Fills `fds` with the shard descriptors the reply's windows index.
  nlohmann::json next(WorkerCursor& w, const nlohmann::json& args, std::vector<Fd>& fds);
  nlohmann::json commit(const nlohmann::json& args);
  // Detach or connection closed: frees the slot and the shards it held.
  void close(WorkerCursor& w);

 private:
  struct Taken {
    cache::WindowRef ref;
    cache::PlanCursor cursor;  // the sequence's, just before this window
  };
  struct ClipMeta {
    uint64_t shard_bytes = 0, window_bytes = 0;
    std::vector<decode::WindowInfo> windows;
  };

  bool take_until(int64_t global);
  int64_t rank_windows(int world) const;  // per rank this epoch; -1 while unknown
  const ClipMeta& meta(const std::string& clip);
  nlohmann::json describe(WorkerCursor& w, int64_t j, const Taken& t, std::vector<Fd>& fds);
  std::string waiting_reason(const WorkerCursor& w) const;
  std::pair<int64_t, cache::PlanCursor> cursor_at(int epoch, int64_t global) const;
  void unmapped(WorkerCursor& w, const nlohmann::json& clips);
  void drop_holder(uint64_t connection, const std::string& clip);
  size_t release(const cache::PlanCursor& durable);
  void next_epoch_if_all_committed();
  void note_budget_wait();
  void publish_locked();

  EngineCore& core_;
  Downloads& downloads_;
  std::mutex commit_mutex_;
  ConsumerTable table_;
  int64_t base_ = 0;            // global index of taken_[0]
  std::vector<Taken> taken_;    // this epoch's windows from the oldest uncommitted one on
  int64_t epoch_windows_ = -1;  // N once the sequence's epoch is done
  std::map<std::string, ClipMeta> meta_;
  std::map<std::string, std::set<uint64_t>> holders_;             // clip -> connections holding its descriptor
  std::map<std::string, std::unique_ptr<SpaceClaim>> lingering_;  // deleted while still held
  std::string budget_wait_reason_;
};

}  // namespace kaio::daemon
