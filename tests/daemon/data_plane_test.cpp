// The data plane (docs/data-plane.md) end to end: kaio-hub serves a small
// kaio-mkdata dataset, an Engine with train.backend "external" decodes it,
// and C++ consumers (tests/support/data_client.h) read it over the data
// socket, mapping the shards they receive as descriptors. Waits are bounded
// and driven by what the consumers observe, never by a clock schedule.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <map>
#include <thread>

#include "common/fs.h"
#include "daemon/engine.h"
#include "decode/shard.h"
#include "state/ledger.h"
#include "tests/support/data_client.h"
#include "tests/support/disk_sampler.h"
#include "tests/support/engine_run.h"

namespace fs = std::filesystem;
using namespace kaio;
using namespace kaio::test;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

constexpr const char* kData =
    "--seed 21 --clips 12 --clips-per-archive 4 --seconds 4 --width 160 --height 120 --fps 30";

// (clip, window) -> hash of its frames, in the order trained or delivered.
using Sequence = std::vector<std::tuple<std::string, int, uint64_t>>;

// The built-in trainer's windows, hashed from the shard while it trains them
// (a shard is deleted only at the checkpoint after the step).
struct HashingTrace : daemon::WindowObserver {
  fs::path work;
  Sequence windows;
  std::map<std::string, fs::path> shards;  // by clip id, from each shard's own metadata
  void on_window(int, int64_t, const std::string& clip, int window) override {
    if (!shards.count(clip)) {
      for (const auto& e : fs::directory_iterator(work)) {
        if (e.path().extension() != ".shard") continue;
        decode::ShardReader r(e.path());
        shards[state::clip_id("kaio-test/data", r.info(0).source_file, r.info(0).member)] = e.path();
      }
    }
    decode::ShardReader reader(shards.at(clip));
    size_t bytes = static_cast<size_t>(reader.frames()) * reader.frame_bytes();
    windows.emplace_back(clip, window, fnv1a(reader.window(window), bytes));
  }
  void on_step(int64_t, double) override {}
};

Config external(const fs::path& dir, const Served& served, const std::string& budget, const std::string& train = "") {
  Config c = config_for(dir, served, budget, R"(, "backend": "external")" + train);
  c.control.data_socket = dir / "data.sock";
  return c;
}

json attach_args(const std::string& name, int rank, int world, int worker, int workers, int batch) {
  return {{"consumer", name}, {"rank", rank},       {"world", world},
          {"worker", worker}, {"workers", workers}, {"batch_size", batch}};
}

// One rank of a consumer as a DataLoader drives it: batch b comes from
// worker b % K; the rank commits after every `commit_every` batches it got.
struct Rank {
  std::string name;
  int rank = 0, world = 1, batch = 4;
  std::vector<std::unique_ptr<TestWorker>> workers;
  int64_t batches = 0;  // received this life
  int64_t from = 0;     // rank-local window the life started at
  bool ended = false;
  std::vector<GotWindow> got;

  Rank(const fs::path& socket, std::string n, int r, int w, int k, int b, std::optional<int64_t> from_window = {})
      : name(std::move(n)), rank(r), world(w), batch(b) {
    for (int i = 0; i < k; ++i) {
      workers.push_back(std::make_unique<TestWorker>(socket));
      json args = attach_args(name, rank, world, i, k, batch);
      if (from_window) args["from"] = {{"epoch", 0}, {"window", *from_window}};
      auto reply = workers.back()->attach(args);
      EXPECT_TRUE(reply.value("ok", false)) << reply.dump();
      from = reply["result"]["from"]["window"].get<int64_t>();
    }
  }

  // The next whole batch (short at the epoch's end); false at the end.
  bool next_batch(std::string* waiting = nullptr, std::chrono::seconds bound = 60s) {
    auto& worker = *workers[static_cast<size_t>(batches % static_cast<int64_t>(workers.size()))];
    size_t before = got.size();
    auto deadline = std::chrono::steady_clock::now() + bound;
    while (std::chrono::steady_clock::now() < deadline) {
      json reply;
      auto windows = worker.next(reply, 500);
      got.insert(got.end(), windows.begin(), windows.end());
      if (waiting) *waiting = reply["waiting"];
      if (static_cast<int64_t>(got.size() - before) == batch) break;
      if (reply["end_of_epoch"].get<bool>()) {
        ended = true;
        return got.size() > before;
      }
      if (waiting && !waiting->empty() && windows.empty()) return false;
    }
    ++batches;
    return true;
  }

  int64_t position() const { return from + static_cast<int64_t>(got.size()); }

  json commit(DataConnection& conn, json token) {
    return conn.call("commit", {{"consumer", name}, {"rank", rank}, {"token", std::move(token)}});
  }
  json commit_here(DataConnection& conn) { return commit(conn, {{"epoch", 0}, {"window", position()}}); }
};

struct DataPlane : testing::Test {
  Sandbox dir{"data-plane"};
};

// Reads every rank to the end of the epoch, committing after each batch;
// returns the windows by global index.
std::map<int64_t, GotWindow> consume_all(const fs::path& socket, const std::string& name, int world, int workers) {
  std::vector<std::unique_ptr<Rank>> ranks;
  for (int r = 0; r < world; ++r) ranks.push_back(std::make_unique<Rank>(socket, name, r, world, workers, 4));
  DataConnection committer(socket);
  for (bool moving = true; moving;) {
    moving = false;
    for (auto& r : ranks) {
      if (r->ended) continue;
      moving = true;
      if (r->next_batch()) {
        EXPECT_TRUE(r->commit_here(committer).value("ok", false));
      }
    }
  }
  std::map<int64_t, GotWindow> by_global;
  for (auto& r : ranks) {
    EXPECT_TRUE(r->commit(committer, {{"epoch", 1}, {"window", 0}}).value("ok", false));
    for (const auto& w : r->got)
      EXPECT_TRUE(by_global.emplace(w.global, w).second) << "global " << w.global << " twice";
  }
  return by_global;
}

daemon::ServiceStatus wait_done(daemon::Engine& engine) {
  return run_to_end(engine, 120s, 60s);
}

}  // namespace

TEST_F(DataPlane, OneEpochGivesEveryWindowOnceWithTheBuiltInTrainersBytes) {
  auto served = serve(dir.path(), kData);
  Sequence reference;
  {
    HashingTrace trace;
    Config c = config_for(dir.path() / "builtin", served, "64MB");
    trace.work = c.storage.cache_dir / "work";
    daemon::Engine engine(c, &trace);
    engine.start();
    ASSERT_EQ(wait_done(engine).state, "done");
    reference = trace.windows;
  }
  ASSERT_GT(reference.size(), 8u);
  for (auto [world, workers] : {std::pair{1, 1}, std::pair{2, 2}}) {
    SCOPED_TRACE("world " + std::to_string(world) + " x " + std::to_string(workers) + " workers");
    fs::path run = dir.path() / ("ext" + std::to_string(world));
    Config c = external(run, served, "8MB");
    DiskSampler disk({c.storage.cache_dir, c.storage.state_dir}, ::getpid());
    daemon::Engine engine(c);
    engine.start();
    auto by_global = consume_all(c.control.data_socket, "clipnet", world, workers);
    auto s = wait_done(engine);
    disk.finish();
    EXPECT_EQ(s.state, "done") << s.state_detail << " " << s.last_error;
    size_t kept = reference.size() - reference.size() % static_cast<size_t>(world);  // the dropped tail
    ASSERT_EQ(by_global.size(), kept);
    for (const auto& [g, w] : by_global) {
      const auto& [clip, window, hash] = reference.at(static_cast<size_t>(g));
      EXPECT_EQ(w.clip, clip) << "global " << g;
      EXPECT_EQ(w.window, window) << "global " << g;
      EXPECT_EQ(w.hash, hash) << "global " << g;
      EXPECT_EQ(w.global % world, (g % world));
    }
    EXPECT_LE(disk.peak(), c.storage.budget) << disk.peak_detail();
    EXPECT_EQ(s.consumers.at(0)["dropped_windows"], reference.size() % static_cast<size_t>(world));
  }
}
