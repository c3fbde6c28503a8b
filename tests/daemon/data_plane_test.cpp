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
#include "daemon/status.h"
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
  ranks.reserve(static_cast<size_t>(world));
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
    daemon::Peer peer{::getpid(), 0, 0, true};
    try {
      engine.handle_control("attach", json::object(), peer);
      ADD_FAILURE() << "attach on the control socket of a built-in trainer";
    } catch (const Error& e) {
      EXPECT_STREQ(e.what(),
                   "kaiod trains with its own trainer (train.backend is \"cpu\"); set train.backend to \"external\" to "
                   "consume");
    }
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

namespace {

// Polls status until `ok` says yes; false after `bound`.
bool status_shows(daemon::Engine& engine, const std::function<bool(const daemon::ServiceStatus&)>& ok,
                  std::chrono::seconds bound = 30s) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ok(engine.status())) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

// Reads the rank to the epoch's end, committing after each batch, then commits the end.
void drain(Rank& r, DataConnection& committer) {
  while (!r.ended) {
    if (r.next_batch()) {
      auto reply = r.commit_here(committer);
      EXPECT_TRUE(reply.value("ok", false)) << reply.dump();
    }
  }
  EXPECT_TRUE(r.commit(committer, {{"epoch", 1}, {"window", 0}}).value("ok", false));
}

std::string error_of(const json& reply) {
  return reply.value("ok", true) ? "(no error: " + reply.dump() + ")" : reply.value("error", std::string());
}

}  // namespace

TEST_F(DataPlane, AConsumerThatNeverCommitsHoldsTheBudgetAndIsNamed) {
  auto served =
      serve(dir.path(), "--seed 22 --clips 16 --clips-per-archive 4 --seconds 8 --width 160 --height 120 --fps 30");
  Config c = external(dir.path(), served, "2MB", R"(, "shuffle_clips": 2)");
  DiskSampler disk({c.storage.cache_dir, c.storage.state_dir}, ::getpid());
  daemon::Engine engine(c);
  engine.start();
  Rank lazy(c.control.data_socket, "lazy", 0, 1, 1, 4);
  std::string waiting;
  for (int i = 0; i < 200 && waiting.empty(); ++i) lazy.next_batch(&waiting, 30s);
  EXPECT_NE(waiting.find("budget-wait: waiting for consumer lazy to commit"), std::string::npos) << waiting;
  EXPECT_TRUE(status_shows(engine,
                           [](const auto& s) {
                             return s.state == "budget-wait" &&
                                    s.state_detail.find("waiting for consumer lazy to commit") != std::string::npos;
                           }))
      << engine.status().state << ": " << engine.status().state_detail;
  DataConnection committer(c.control.data_socket);
  EXPECT_TRUE(lazy.commit_here(committer).value("ok", false));
  drain(lazy, committer);
  auto s = wait_done(engine);
  disk.finish();
  EXPECT_EQ(s.state, "done") << s.state_detail << " " << s.last_error;
  EXPECT_EQ(lazy.got.size(), 64u);
  EXPECT_LE(disk.peak(), c.storage.budget) << disk.peak_detail();
}

TEST_F(DataPlane, AConsumerThatVanishedResumesFromItsTokenInTheSameOrder) {
  auto served = serve(dir.path(), kData);
  Config c = external(dir.path(), served, "8MB");
  daemon::Engine engine(c);
  engine.start();
  DataConnection committer(c.control.data_socket);
  std::vector<GotWindow> committed, uncommitted;
  {
    Rank first(c.control.data_socket, "clipnet", 0, 1, 2, 4);
    ASSERT_TRUE(first.next_batch() && first.next_batch());
    ASSERT_TRUE(first.commit_here(committer).value("ok", false));
    ASSERT_TRUE(first.next_batch());
    committed.assign(first.got.begin(), first.got.begin() + 8);
    uncommitted.assign(first.got.begin() + 8, first.got.end());
  }  // sockets closed, no detach
  EXPECT_TRUE(status_shows(
      engine, [](const auto& s) { return !s.consumers.empty() && s.consumers[0]["ranks"][0]["state"] == "gone"; }));
  std::string table = daemon::render_consumers(daemon::to_json(engine.status()));  // kaioctl consumers
  EXPECT_NE(table.find("clipnet          0/1   gone since "), std::string::npos) << table;
  EXPECT_NE(table.find("e0/12         e0/8"), std::string::npos) << table;
  Rank again(c.control.data_socket, "clipnet", 0, 1, 1, 4);
  EXPECT_EQ(again.from, 8);
  drain(again, committer);
  ASSERT_GE(again.got.size(), uncommitted.size());
  for (size_t i = 0; i < uncommitted.size(); ++i) {
    EXPECT_EQ(again.got[i].global, uncommitted[i].global);
    EXPECT_EQ(again.got[i].hash, uncommitted[i].hash);
  }
  std::set<int64_t> globals;
  for (const auto* part : {&committed, &again.got})
    for (const auto& w : *part) EXPECT_TRUE(globals.insert(w.global).second) << w.global;
  EXPECT_EQ(globals.size(), 24u);
  EXPECT_EQ(wait_done(engine).state, "done");
}

TEST_F(DataPlane, KaiodKilledAndRestartedRepeatsNothingCommittedAndLosesNothing) {
  auto served = serve(dir.path(), kData);
  Config c = external(dir.path(), served, "8MB");
  auto life = [&c] {
    pid_t child = ::fork();
    if (child != 0) return child;
    try {
      daemon::Engine engine(c);
      engine.start();
      auto deadline = std::chrono::steady_clock::now() + 120s;
      while (!engine.finished() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
      ::_exit(engine.status().state == "done" ? 0 : 3);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      ::_exit(4);
    }
  };
  auto attach_when_up = [&c](std::optional<int64_t> from) {
    auto deadline = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      try {
        return std::make_unique<Rank>(c.control.data_socket, "clipnet", 0, 1, 1, 4, from);
      } catch (const Error&) {
        if (std::chrono::steady_clock::now() > deadline) throw;
        std::this_thread::sleep_for(20ms);
      }
    }
  };
  pid_t kaiod = life();
  std::vector<GotWindow> committed;
  {
    auto rank = attach_when_up({});
    DataConnection committer(c.control.data_socket);
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(rank->next_batch());
      ASSERT_TRUE(rank->commit_here(committer).value("ok", false));
    }
    ASSERT_TRUE(rank->next_batch());  // delivered, never committed
    committed.assign(rank->got.begin(), rank->got.begin() + 12);
    ::kill(kaiod, SIGKILL);  // at a progress point: 12 committed, 4 more delivered
    int status = 0;
    ::waitpid(kaiod, &status, 0);
  }
  kaiod = life();
  auto rank = attach_when_up(int64_t{12});  // the client's saved state
  DataConnection committer(c.control.data_socket);
  auto stale = attach_args("clipnet", 0, 1, 1, 2, 2);  // worker 1's first batch from 8: windows 10-11
  stale["from"] = {{"epoch", 0}, {"window", 8}};
  EXPECT_EQ(error_of(committer.call("attach", stale)),
            "token epoch 0 window 8 of consumer \"clipnet\" rank 0 is behind its committed token epoch 0 window 12: "
            "those windows are deleted");
  drain(*rank, committer);
  int status = 0;
  ::waitpid(kaiod, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::vector<int64_t> globals;
  for (const auto* part : {&committed, &rank->got})
    for (const auto& w : *part) globals.push_back(w.global);
  ASSERT_EQ(globals.size(), 24u);
  for (size_t g = 0; g < globals.size(); ++g) EXPECT_EQ(globals[g], static_cast<int64_t>(g));
}

// A consumer killed after its epoch's last batch resumes from the end token;
// the commit its attach carries lets kaiod start the next epoch before the
// worker asks for more. The worker is told its epoch ended (it waited for
// good: python_consumer_kill hung in a clean-clone CI run).
TEST_F(DataPlane, AWorkerResumedAtItsEpochsEndMovesOnOnceTheNextEpochStarted) {
  auto served = serve(dir.path(), kData);
  Config c = external(dir.path(), served, "8MB", R"(, "epochs": 2)");
  daemon::Engine engine(c);
  engine.start();
  const auto& socket = c.control.data_socket;
  int64_t end = 0;
  {
    Rank first_life(socket, "resumed", 0, 1, 1, 4);
    while (first_life.next_batch()) {
    }
    ASSERT_TRUE(first_life.ended);
    end = first_life.position();
  }  // killed after its last batch: its connection closes, nothing committed
  auto args = attach_args("resumed", 0, 1, 0, 1, 4);
  args["from"] = {{"epoch", 0}, {"window", end}};
  TestWorker worker(socket);
  json attached;
  for (int i = 0; i < 100; ++i) {  // the closed connection's slot frees within moments
    attached = worker.attach(args);
    if (attached.value("ok", false)) break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(attached.value("ok", false)) << attached.dump();
  DataConnection committer(socket);
  auto committed =
      committer.call("commit", {{"consumer", "resumed"}, {"rank", 0}, {"token", {{"epoch", 0}, {"window", end}}}});
  ASSERT_TRUE(committed.value("ok", false)) << committed.dump();
  ASSERT_TRUE(status_shows(
      engine, [](const auto& s) { return s.train.epoch == 1; }, 120s))
      << "kaiod did not start epoch 1: " << engine.status().state;
  json reply;
  auto windows = worker.next(reply, 2000);
  EXPECT_TRUE(windows.empty());
  EXPECT_TRUE(reply.value("end_of_epoch", false)) << reply.dump();
  windows = worker.next(reply, 30000);
  ASSERT_FALSE(windows.empty()) << "no window of epoch 1: " << reply.dump();
  EXPECT_EQ(windows.front().epoch, 1);
}

TEST_F(DataPlane, HostileRequestsGetTheDocumentedErrorsWhileOthersAreServed) {
  auto served = serve(dir.path(), kData);
  Config c = external(dir.path(), served, "8MB");
  daemon::Engine engine(c);
  engine.start();
  const auto& socket = c.control.data_socket;
  DataConnection slow(socket);  // a request begun and never finished
  ASSERT_TRUE(daemon::write_all(slow.fd(), "{\"cmd\":", std::chrono::steady_clock::now() + 5s));
  std::vector<GotWindow> good_got;
  std::thread good([&] {
    Rank good_rank(socket, "good", 0, 1, 2, 4);
    DataConnection committer(socket);
    drain(good_rank, committer);
    good_got = good_rank.got;
  });
  Rank victim(socket, "victim", 0, 1, 1, 4);
  DataConnection hostile(socket);
  EXPECT_NE(hostile.call_raw("{not json\n").find("malformed request"), std::string::npos);
  EXPECT_NE(error_of(hostile.call("fly", json::object())).find("unknown command"), std::string::npos);
  EXPECT_EQ(
      error_of(hostile.call("commit", {{"consumer", "ghost"}, {"rank", 0}, {"token", {{"epoch", 0}, {"window", 4}}}})),
      "unknown consumer \"ghost\"");
  EXPECT_NE(error_of(hostile.call("attach", attach_args("a b", 0, 1, 0, 1, 4))).find("consumer name"),
            std::string::npos);
  EXPECT_EQ(error_of(hostile.call("attach", attach_args("victim", 0, 2, 0, 1, 4))),
            "consumer \"victim\" has world 1; attaching with world 2 is not supported (start a new consumer name)");
  EXPECT_NE(error_of(hostile.call("attach", attach_args("victim", 0, 1, 0, 1, 4)))
                .find("consumer \"victim\" rank 0 worker 0 is already attached (pid"),
            std::string::npos);
  EXPECT_EQ(error_of(hostile.call("attach", attach_args("other", 2, 2, 0, 1, 4))), "rank 2 is not below world 2");
  EXPECT_EQ(error_of(hostile.call("attach", attach_args("other", 0, 1, 2, 2, 4))), "worker 2 is not below workers 2");
  EXPECT_EQ(error_of(hostile.call("attach", attach_args("other", 0, 1, 0, 1, 5000))), "batch_size must be 1 to 4096");
  auto from_odd = attach_args("victim", 0, 1, 1, 2, 4);
  from_odd["from"] = {{"epoch", 0}, {"window", 2}};
  EXPECT_EQ(error_of(hostile.call("attach", from_odd)),
            "token epoch 0 window 2 is not at a batch boundary (batch_size 4)");
  DataConnection committer(socket);
  EXPECT_EQ(error_of(victim.commit(committer, {{"epoch", 0}, {"window", 8}})),
            "commit of consumer \"victim\" rank 0 at epoch 0 window 8: only 0 windows were delivered to that rank");
  ASSERT_TRUE(victim.next_batch());
  EXPECT_TRUE(victim.commit_here(committer).value("ok", false));
  EXPECT_EQ(error_of(victim.commit(committer, {{"epoch", 0}, {"window", 0}})),
            "commit of consumer \"victim\" rank 0 goes backwards: epoch 0 window 0 is behind the committed epoch 0 "
            "window 4");
  auto behind = attach_args("victim", 0, 1, 1, 2, 2);  // worker 1's first batch from 0: windows 2-3
  behind["from"] = {{"epoch", 0}, {"window", 0}};
  EXPECT_EQ(error_of(hostile.call("attach", behind)),
            "token epoch 0 window 0 of consumer \"victim\" rank 0 is behind its committed token epoch 0 window 4: "
            "those windows are deleted");
  // A worker that attaches after its siblings were served and committed: its
  // first batch from 0 (windows 4-7) is not behind the commit.
  auto late = attach_args("victim", 0, 1, 1, 2, 4);
  late["from"] = {{"epoch", 0}, {"window", 0}};
  DataConnection late_worker(socket);
  auto accepted = late_worker.call("attach", late);
  EXPECT_TRUE(accepted.value("ok", false)) << accepted.dump();
  DataConnection big(socket);
  EXPECT_NE(big.call_raw(std::string(70000, 'x')).find("request longer than 65536 bytes"), std::string::npos);
  good.join();
  EXPECT_EQ(good_got.size(), 24u) << "the good consumer was served to the end";
  EXPECT_NE(slow.call_raw("").find("request not completed in time"), std::string::npos);
}

// Two epochs, two ranks, an odd window count: each rank gets floor(N/2) per
// epoch, the last window is dropped, and epoch 1 starts once both ranks
// committed epoch 0.
TEST_F(DataPlane, TwoEpochsTwoRanksDropTheOddTailAndWaitForEachOther) {
  auto served =
      serve(dir.path(), "--seed 23 --clips 13 --clips-per-archive 5 --seconds 6 --width 160 --height 120 --fps 30");
  Config c = external(dir.path(), served, "8MB", R"(, "epochs": 2)");
  daemon::Engine engine(c);
  engine.start();
  DataConnection committer(c.control.data_socket);
  std::vector<std::unique_ptr<Rank>> ranks;
  ranks.reserve(2);
  for (int r = 0; r < 2; ++r) ranks.push_back(std::make_unique<Rank>(c.control.data_socket, "pair", r, 2, 1, 4));
  std::map<int, std::set<int64_t>> globals;  // by epoch
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (auto& r : ranks) {
      while (!r->ended) {
        if (r->next_batch()) {
          auto reply = r->commit(committer, {{"epoch", epoch}, {"window", r->position()}});
          EXPECT_TRUE(reply.value("ok", false)) << reply.dump();
        }
      }
      if (epoch == 0 && r->rank == 0) {  // rank 1 has not finished epoch 0: rank 0 waits for it
        json reply;
        EXPECT_TRUE(r->workers[0]->next(reply, 300).empty());
        EXPECT_EQ(reply["waiting"], "waiting for rank 1 of consumer pair to finish epoch 0");
      }
      EXPECT_TRUE(r->commit(committer, {{"epoch", epoch + 1}, {"window", 0}}).value("ok", false));
      for (const auto& w : r->got) {
        EXPECT_EQ(w.epoch, epoch);
        EXPECT_EQ(w.global % 2, r->rank);
        EXPECT_TRUE(globals[epoch].insert(w.global).second) << "epoch " << epoch << " global " << w.global;
      }
      r->got.clear();
      r->from = 0;
      r->batches = 0;
      r->ended = false;
    }
  }
  auto s = wait_done(engine);
  EXPECT_EQ(s.state, "done") << s.state_detail << " " << s.last_error;
  for (int epoch = 0; epoch < 2; ++epoch) {
    ASSERT_EQ(globals[epoch].size(), 38u) << "13 clips x 3 windows, the 39th dropped";
    EXPECT_EQ(*globals[epoch].rbegin(), 37);
  }
  EXPECT_EQ(s.consumers.at(0)["dropped_windows"], 1);
}

// source.partition {index 1, count 2} takes only the files at odd plan
// positions: of 3 archives of 4 clips, the one at position 1.
TEST_F(DataPlane, APartitionTakesOnlyItsFiles) {
  auto served = serve(dir.path(), kData);
  Config c = external(dir.path(), served, "8MB");
  c.source.partition_index = 1;
  c.source.partition_count = 2;
  daemon::Engine engine(c);
  engine.start();
  Rank rank(c.control.data_socket, "node1", 0, 1, 1, 4);
  DataConnection committer(c.control.data_socket);
  drain(rank, committer);
  EXPECT_EQ(rank.got.size(), 8u);
  EXPECT_EQ(wait_done(engine).state, "done");
}
