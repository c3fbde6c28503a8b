// The engine's three promises on the paths a review found no test walked:
// a checkpoint never deletes itself, no deleted shard stays mapped, every
// window trained exactly once across kills at epoch boundaries, pauses and a
// file that fails part-way, and nothing lost when writes fail with ENOSPC.
// Real parts throughout: kaio-mkdata encodes the data, kaio-hub serves it on
// loopback, the engine trains the tiny model on the cpu backend. Kills, pauses
// and the filling of the disk are driven by the progress the test observes.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "common/config.h"
#include "common/error.h"
#include "common/fd.h"
#include "daemon/engine.h"
#include "state/ledger.h"
#include "tests/fetch/hub_process.h"
#include "tests/support/private_tmpfs.h"

namespace fs = std::filesystem;
using namespace kaio;
using namespace std::chrono_literals;

namespace {

using Window = std::pair<std::string, int>;

// A dataset made by kaio-mkdata and served by kaio-hub, for one test.
struct Served {
  std::unique_ptr<test::HubProcess> hub;
  uint64_t archive_bytes = 0;
};

Served serve(const fs::path& dir, const std::string& mkdata_args, const std::function<void(const fs::path&)>& mangle = {}) {
  fs::path repo = dir / "hub" / "kaio-test" / "data";
  std::string cmd = test::tool("kaio-mkdata").string() + " --layout llava --out " + repo.string() + " " + mkdata_args + " >/dev/null 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  if (mangle) mangle(repo);
  Served s;
  for (const auto& e : fs::recursive_directory_iterator(repo))
    if (e.is_regular_file() && e.path().extension() == ".gz") s.archive_bytes += e.file_size();
  s.hub = std::make_unique<test::HubProcess>(dir / "hub");
  EXPECT_TRUE(s.hub->ok()) << "kaio-hub did not start";
  return s;
}

Config config_for(const fs::path& dir, const Served& served, const std::string& budget, const std::string& train = "",
                  const std::string& storage = R"("free_disk_floor": "10MB")") {
  std::string json = R"({"source": {"endpoint": ")" + served.hub->url() +
                     R"(", "repo": "kaio-test/data", "include": ["**/*.tar.gz"], "captions": ["**/*_cap_processed.json"]},
      "storage": {"cache_dir": ")" + (dir / "cache").string() + R"(", "state_dir": ")" + (dir / "state").string() +
                     R"(", "budget": ")" + budget + R"(", )" + storage + R"(},
      "decode": {"frames": 8, "stride": 8, "fps": 4, "size": 32, "workers": 2},
      "train": {"backend": "cpu", "model": "tiny", "batch_size": 4, "checkpoint_every": 4, "shuffle_clips": 4,
                "lr": 0.001, "warmup_steps": 2, "threads": 1, "seed": 3)" +
                     train + R"(},
      "control": {"socket": ")" + (dir / "kaiod.sock").string() + R"("}})";
  return parse_config(json, "guarantees-test.json");
}

struct Trace : daemon::WindowObserver {
  std::mutex mutex;
  std::vector<Window> windows;
  std::map<int, std::vector<Window>> by_epoch;
  std::map<int64_t, double> losses;
  std::function<void(int epoch)> on_first_window_of_epoch;
  void on_window(int epoch, int64_t, const std::string& clip, int window) override {
    std::unique_lock lock(mutex);
    bool first = by_epoch[epoch].empty();
    windows.emplace_back(clip, window);
    by_epoch[epoch].emplace_back(clip, window);
    lock.unlock();
    if (first && on_first_window_of_epoch) on_first_window_of_epoch(epoch);
  }
  void on_step(int64_t step, double loss) override {
    std::lock_guard lock(mutex);
    losses[step] = loss;
  }
};

// Waits, bounded, for the engine to finish; returns its last status. A run
// that sits in budget-wait with nothing moving for `stuck` is given up on
// (the caller's check of the state then fails with the status shown).
daemon::ServiceStatus run_to_end(daemon::Engine& engine, std::chrono::seconds limit = 600s, std::chrono::seconds stuck = 120s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  auto moved = std::chrono::steady_clock::now();
  std::string last;
  while (!engine.finished() && std::chrono::steady_clock::now() < deadline) {
    auto s = engine.status();
    std::string progress = std::to_string(s.train.step) + " " + std::to_string(s.files.done) + " " +
                           std::to_string(s.clips.ready) + " " + std::to_string(s.reserved_bytes) + " " + std::to_string(s.disk_bytes);
    if (progress != last || s.state != "budget-wait") {
      last = progress;
      moved = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - moved > stuck) {
      std::printf("watchdog: budget-wait with nothing moving for %lld s: %s; reserved %llu of %llu, disk %llu\n",
                  static_cast<long long>(stuck.count()), s.state_detail.c_str(), static_cast<unsigned long long>(s.reserved_bytes),
                  static_cast<unsigned long long>(s.budget_bytes), static_cast<unsigned long long>(s.disk_bytes));
      return s;
    }
    std::this_thread::sleep_for(50ms);
  }
  return engine.status();
}

// Files of `dir` that this process still holds mapped or open after they
// were unlinked: space `du` cannot see but the disk still holds.
int deleted_but_held(const fs::path& dir) {
  std::set<std::string> held;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find(dir.string()) != std::string::npos && line.find("(deleted)") != std::string::npos) held.insert(line.substr(line.find('/')));
  std::error_code ec;
  for (const auto& fd : fs::directory_iterator("/proc/self/fd", ec)) {
    auto target = fs::read_symlink(fd.path(), ec).string();
    if (!ec && target.find(dir.string()) != std::string::npos && target.find("(deleted)") != std::string::npos) held.insert(target);
  }
  return static_cast<int>(held.size());
}

std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) found.push_back(fs::relative(e.path(), dir).string());
  return found;
}

struct Guarantees : testing::Test {
  fs::path dir = test::temp_dir("guarantees");
  void TearDown() override { fs::remove_all(dir); }
};

}  // namespace

// keep_checkpoints 1 with max_steps: the last step was checkpointed twice and
// the rotation deleted the file (and ledger row) it had just written, after
// retention had deleted the shards it covered; every restart then died.
TEST_F(Guarantees, ACheckpointNeverDeletesItself) {
  auto served = serve(dir, "--seed 11 --clips 12 --clips-per-archive 4 --seconds 4 --width 160 --height 120 --fps 30");
  Config c = config_for(dir, served, "64MB", R"(, "keep_checkpoints": 1, "max_steps": 4)");
  {
    daemon::Engine engine(c);
    engine.start();
    auto s = run_to_end(engine);
    ASSERT_EQ(s.state, "done") << s.last_error;
    EXPECT_EQ(s.train.step, 4) << "24 windows make 6 steps of 4; max_steps stops at 4";
  }
  {
    auto ledger = state::Ledger::open(dir / "state");
    auto checkpoints = ledger.checkpoints();
    ASSERT_EQ(checkpoints.size(), 1u) << "keep_checkpoints 1 keeps exactly one";
    EXPECT_EQ(checkpoints.back().step, 4);
    EXPECT_TRUE(fs::exists(checkpoints.back().path)) << checkpoints.back().path;
  }
  daemon::Engine again(c);  // resumes from it
  again.start();
  auto s = run_to_end(again);
  EXPECT_EQ(s.state, "done") << s.last_error;
  EXPECT_EQ(s.train.step, 4);
  EXPECT_EQ(s.last_error, "");
}

// Pause and the end of an epoch checkpoint outside the training loop; the
// trainer's mappings of the shards they deleted stayed open (12 after a pause,
// 48 at an epoch's end), holding space the budget had handed out again.
TEST_F(Guarantees, NoDeletedShardStaysMappedAfterAPauseOrAnEpoch) {
  auto served = serve(dir, "--seed 12 --clips 24 --clips-per-archive 4 --seconds 4 --width 160 --height 120 --fps 30");
  Config c = config_for(dir, served, "16MB", R"(, "epochs": 2, "checkpoint_every": 1000)");
  Trace trace;
  std::atomic<int> held_at_epoch_1{-1};
  trace.on_first_window_of_epoch = [&](int epoch) {
    if (epoch == 1) held_at_epoch_1 = deleted_but_held(dir);
  };
  daemon::Engine engine(c, &trace);
  engine.start();
  daemon::Peer admin{::getpid(), 0, 0, true};
  auto deadline = std::chrono::steady_clock::now() + 300s;
  while (engine.status().train.step < 6 && !engine.finished() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(20ms);
  ASSERT_GE(engine.status().train.step, 6) << engine.status().last_error;
  engine.handle_control("pause", {}, admin);  // returns once the pause checkpoint is durable
  int held_after_pause = deleted_but_held(dir);
  double eta_running = -1;
  engine.handle_control("resume", {}, admin);
  while (!engine.finished() && std::chrono::steady_clock::now() < deadline) {
    auto s = engine.status();
    if (s.state == "running") eta_running = std::max(eta_running, s.epoch_eta_seconds);
    std::this_thread::sleep_for(50ms);
  }
  auto s = engine.status();
  ASSERT_EQ(s.state, "done") << s.last_error;
  std::printf("deleted shards still mapped: %d after a pause, %d at the first window of epoch 1; eta while running %.1f s\n",
              held_after_pause, held_at_epoch_1.load(), eta_running);
  EXPECT_EQ(held_after_pause, 0);
  EXPECT_EQ(held_at_epoch_1.load(), 0);
  EXPECT_GT(eta_running, 0) << "status.epoch_eta_seconds is known while training runs";
  EXPECT_EQ(s.epoch_eta_seconds, 0) << "nothing left once done";
  for (const auto& [epoch, windows] : trace.by_epoch) {
    std::set<Window> unique(windows.begin(), windows.end());
    EXPECT_EQ(unique.size(), windows.size()) << "a window repeated in epoch " << epoch;
    EXPECT_EQ(windows.size(), trace.by_epoch[0].size()) << "epoch " << epoch << " trained another number of windows";
  }
}

namespace {

// One life of the engine in a forked child that appends its trace to `file`:
// "w <epoch> <step> <clip> <window>" per window, then "loss <step> <loss>".
// At the steps in `pause_at` another thread of the child pauses and resumes.
pid_t start_life(const Config& c, const fs::path& file, std::set<int64_t> pause_at) {
  pid_t child = ::fork();
  if (child != 0) return child;
  struct FileTrace : daemon::WindowObserver {
    FILE* out = nullptr;
    std::string pending;
    void on_window(int epoch, int64_t step, const std::string& clip, int window) override {
      pending += "w " + std::to_string(epoch) + " " + std::to_string(step) + " " + clip + " " + std::to_string(window) + "\n";
    }
    void on_step(int64_t step, double loss) override {
      std::fprintf(out, "%sloss %lld %.9g\n", pending.c_str(), static_cast<long long>(step), loss);
      std::fflush(out);
      pending.clear();
    }
  } trace;
  trace.out = std::fopen(file.c_str(), "a");
  try {
    daemon::Engine engine(c, &trace);
    engine.start();
    daemon::Peer admin{::getpid(), 0, 0, true};
    auto deadline = std::chrono::steady_clock::now() + 600s;
    while (!engine.finished() && std::chrono::steady_clock::now() < deadline) {
      auto step = engine.status().train.step;
      if (!pause_at.empty() && step >= *pause_at.begin()) {
        pause_at.erase(pause_at.begin());
        engine.handle_control("pause", {{"reason", "test"}}, admin);
        engine.handle_control("resume", {}, admin);
      }
      std::this_thread::sleep_for(10ms);
    }
    auto s = engine.status();
    if (s.state != "done") std::fprintf(stderr, "child: state %s: %s\n", s.state.c_str(), s.last_error.c_str());
    ::_exit(s.state == "done" ? 0 : 3);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "child: %s\n", e.what());
    ::_exit(4);
  }
}

// The highest step the trace file has recorded a loss for.
int64_t last_step(const fs::path& file) {
  std::ifstream in(file);
  int64_t best = 0;
  for (std::string line; std::getline(in, line);)
    if (line.rfind("loss ", 0) == 0) best = std::max<int64_t>(best, std::stoll(line.substr(5)));
  return best;
}

struct Replayed {
  std::vector<Window> windows;  // the last word on each step, in step order
  std::map<int64_t, double> losses;
};

// Steps after the last checkpoint are trained again after a kill: the last
// word on each step counts.
Replayed replay(const fs::path& file) {
  std::map<int64_t, std::vector<Window>> by_step, current;
  Replayed r;
  std::ifstream in(file);
  for (std::string word; in >> word;) {
    if (word == "loss") {
      int64_t step;
      double loss;
      in >> step >> loss;
      by_step[step] = current[step];
      current.erase(step);
      r.losses[step] = loss;
    } else {
      int epoch, window;
      int64_t step;
      std::string clip;
      in >> epoch >> step >> clip >> window;
      current[step].emplace_back(clip, window);
    }
  }
  for (auto& [step, windows] : by_step) r.windows.insert(r.windows.end(), windows.begin(), windows.end());
  return r;
}

// Cuts one archive short, so its file fails part-way after delivering clips.
void truncate_one_archive(const fs::path& repo) {
  std::vector<fs::path> archives;
  for (const auto& e : fs::recursive_directory_iterator(repo))
    if (e.path().extension() == ".gz") archives.push_back(e.path());
  std::sort(archives.begin(), archives.end());
  ASSERT_GE(archives.size(), 3u);
  fs::resize_file(archives[1], fs::file_size(archives[1]) * 6 / 10);
}

}  // namespace

// Kills at progress points over two epochs, with pauses and a file that fails
// part-way. Before: a kill early in epoch 1 left its file in a state recovery
// did not roll back (the restart failed it: "cannot go from extracting to
// downloading"), and the part-failed file's clips left the plan on restart
// (windows lost and repeated against the uninterrupted run).
TEST_F(Guarantees, KilledAtProgressPointsAcrossEpochsPausesAndAPartFailedFile) {
  auto served = serve(dir, "--seed 13 --clips 30 --clips-per-archive 5 --seconds 4 --width 160 --height 120 --fps 30", truncate_one_archive);
  Config c = config_for(dir, served, "12MB", R"(, "epochs": 2, "checkpoint_every": 3)");

  Trace reference;
  {
    daemon::Engine engine(c, &reference);
    engine.start();
    auto s = run_to_end(engine);
    ASSERT_EQ(s.state, "done") << s.last_error;
    EXPECT_EQ(s.files.failed, 1) << "the cut archive fails";
  }
  ASSERT_EQ(reference.by_epoch.size(), 2u);
  const int64_t steps = static_cast<int64_t>(reference.losses.size());
  const int64_t epoch_0_steps = static_cast<int64_t>((reference.by_epoch[0].size() + 3) / 4);
  fs::remove_all(dir / "cache");
  fs::remove_all(dir / "state");

  // Kill targets: random steps over the whole run, and the first step of epoch 1.
  std::mt19937 rng(2024);
  std::set<int64_t> kill_at = {epoch_0_steps + 1};
  while (kill_at.size() < 6) kill_at.insert(std::uniform_int_distribution<int64_t>(1, steps - 1)(rng));
  std::set<int64_t> pause_at = {steps / 3, 2 * steps / 3};
  fs::path file = dir / "trace.txt";
  int kills = 0, lives = 0;
  for (;;) {
    ASSERT_LT(++lives, 30) << "too many lives";
    pid_t child = start_life(c, file, pause_at);
    int status = 0;
    auto deadline = std::chrono::steady_clock::now() + 600s;
    bool killed = false;
    while (::waitpid(child, &status, WNOHANG) == 0) {
      if (!kill_at.empty() && last_step(file) >= *kill_at.begin()) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        kill_at.erase(kill_at.begin());
        ++kills;
        killed = true;
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        FAIL() << "a life made no end within 600 s";
      }
      std::this_thread::sleep_for(5ms);
    }
    if (killed) continue;
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0) << "see child: above";
    break;
  }
  auto resumed = replay(file);
  std::set<Window> unique(resumed.windows.begin(), resumed.windows.end());
  int64_t loss_mismatches = 0;
  for (const auto& [step, loss] : reference.losses)
    if (!resumed.losses.count(step) || std::abs(resumed.losses[step] - loss) > 1e-5 * std::max(1.0, std::abs(loss))) ++loss_mismatches;
  size_t first_diff = 0;
  while (first_diff < std::min(resumed.windows.size(), reference.windows.size()) && resumed.windows[first_diff] == reference.windows[first_diff])
    ++first_diff;
  std::printf("kills %d (lives %d), windows %zu of %zu, first difference at %zu, loss mismatches %lld\n", kills, lives,
              resumed.windows.size(), reference.windows.size(), first_diff, static_cast<long long>(loss_mismatches));
  EXPECT_EQ(kills, 6) << "every kill target is a step the run reaches";
  EXPECT_EQ(resumed.windows, reference.windows) << "the window sequence differs at window " << first_diff;
  EXPECT_EQ(loss_mismatches, 0);
  EXPECT_EQ(files_under(dir / "cache"), std::vector<std::string>{}) << "nothing left behind";
}

namespace {

// In a forked child on a private tmpfs: training starts, another writer takes
// all but `leave` bytes of the filesystem so that kaiod's writes fail with
// ENOSPC (free_disk_floor 0), then gives the space back once kaiod says
// disk-full. Exit 0 when every window was trained exactly once.
int fill_the_disk_midway(const Config& c, const fs::path& dir, uint64_t leave, size_t windows_wanted) {
  if (!test::mount_private_tmpfs(dir, "64m")) return 77;
  auto check = [](bool ok, const std::string& what) {
    if (ok) return;
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    ::_exit(1);
  };
  Trace trace;
  std::string seen;
  {
    daemon::Engine engine(c, &trace);
    engine.start();
    auto deadline = std::chrono::steady_clock::now() + 300s;
    while (engine.status().train.step < 2 && !engine.finished() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    check(engine.status().train.step >= 2, "training started: " + engine.status().last_error);
    {
      Fd filler(::open((dir / "filler").c_str(), O_CREAT | O_WRONLY, 0600));
      uint64_t free = fs::space(dir).available;
      check(filler.get() >= 0 && free > leave && ::posix_fallocate(filler.get(), 0, static_cast<off_t>(free - leave)) == 0, "filling the tmpfs");
    }
    while (std::chrono::steady_clock::now() < deadline) {
      auto st = engine.status();
      if (st.state == "disk-full") {
        seen = st.state_detail;
        break;
      }
      check(st.state != "error", "kaiod stopped on a full disk: " + st.last_error);
      if (st.state == "done") break;  // finished on what it had: nothing wrote
      std::this_thread::sleep_for(10ms);
    }
    fs::remove(dir / "filler");
    auto st = run_to_end(engine);
    check(st.state == "done", "done after space returned, got " + st.state + ": " + st.last_error);
  }
  std::set<Window> unique(trace.windows.begin(), trace.windows.end());
  check(seen.rfind("file ", 0) == 0, "a write of a file's download or shards failed and kaiod showed disk-full: '" + seen + "'");
  check(unique.size() == trace.windows.size(), "no window repeated");
  check(trace.windows.size() == windows_wanted,
        "no window lost: " + std::to_string(trace.windows.size()) + " of " + std::to_string(windows_wanted));
  check(files_under(dir / "cache").empty(), "nothing left behind");
  std::printf("disk full (%s): windows %zu, lost 0, repeated 0\n", seen.c_str(), trace.windows.size());
  std::fflush(stdout);
  return 0;
}

void expect_disk_full_loses_nothing(const fs::path& dir, const std::string& storage) {
  auto served = serve(dir, "--seed 14 --clips 24 --clips-per-archive 4 --seconds 4 --width 320 --height 240 --fps 30");
  // No checkpoint before the end: the writes that fail are the file's own.
  Config c = config_for(dir, served, "24MB", R"(, "checkpoint_every": 1000)", storage);
  fs::path run_dir = dir / "run";
  fs::create_directories(run_dir);
  c.storage.cache_dir = run_dir / "cache";
  c.storage.state_dir = run_dir / "state";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(fill_the_disk_midway(c, run_dir, 256 * 1024, 24 * 2));
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + 600s;
  while (::waitpid(child, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      FAIL() << "the full-filesystem run did not end within 600 s";
    }
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(WIFEXITED(status)) << "child died by signal " << WTERMSIG(status);
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "skipped: cannot mount a private tmpfs here (needs root or user namespaces)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see FAILED: above";
}

}  // namespace

// Before: the retry of a downloaded file was failed with a backward ledger
// transition (extracting -> downloading).
TEST_F(Guarantees, DiskFullWithFailingWritesLosesNothingDownloaded) {
  expect_disk_full_loses_nothing(dir, R"("free_disk_floor": "0", "stream_threshold": "20MB")");
}

// Before: the retry of a streamed file decoded again members already planned
// and deleted their live shards; kaiod stopped ("open shard ...: No such file").
TEST_F(Guarantees, DiskFullWithFailingWritesLosesNothingStreamed) {
  expect_disk_full_loses_nothing(dir, R"("free_disk_floor": "0", "stream_threshold": "1KB")");
}

namespace {

// The smallest budget kaiod accepts for `c`, to 64 KB: the start-up check
// refuses what it cannot finish under.
uint64_t smallest_accepted(Config c) {
  uint64_t lo = 1u << 20, hi = 256u << 20;
  while (hi - lo > (64u << 10)) {
    uint64_t mid = (lo + hi) / 2;
    c.storage.budget = mid;
    try {
      daemon::Engine probe(c);
      hi = mid;
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::budget) throw;
      lo = mid;
    }
  }
  return hi;
}

// One epoch under `budget`: done, every window once, never over the budget.
void expect_epoch_finishes(const fs::path& dir, Config c, uint64_t budget, size_t* windows_out = nullptr) {
  fs::remove_all(dir / "cache");
  fs::remove_all(dir / "state");
  c.storage.budget = budget;
  Trace trace;
  daemon::ServiceStatus s;
  {
    daemon::Engine engine(c, &trace);
    engine.start();
    s = run_to_end(engine);
  }
  std::set<Window> unique(trace.windows.begin(), trace.windows.end());
  std::printf("budget %llu: state %s, %zu windows (%zu distinct), peak reserved %llu\n", static_cast<unsigned long long>(budget),
              s.state.c_str(), trace.windows.size(), unique.size(), static_cast<unsigned long long>(s.peak_reserved_bytes));
  EXPECT_EQ(s.state, "done") << "budget " << budget << ": " << s.state_detail << " " << s.last_error;
  EXPECT_EQ(unique.size(), trace.windows.size()) << "budget " << budget << ": a window repeated";
  EXPECT_LE(s.peak_reserved_bytes, budget);
  if (windows_out) *windows_out = trace.windows.size();
}

}  // namespace

// Tried as a user would: 8 archives of 4 H.264 clips of 8 s at 320x240, a
// 12 MB budget that kaiod accepts, 16-frame windows at 64 px and batches of 8.
// Before: after 2 steps kaiod sat in budget-wait for good (reserved 11.73 MB
// of 12 MB, 4 windows ready for a batch of 8).
TEST_F(Guarantees, AnAcceptedBudgetFinishesTheEpochOnHonestData) {
  auto served = serve(dir, "--seed 15 --clips 32 --clips-per-archive 4 --seconds 8 --width 320 --height 240 --fps 30");
  Config c = config_for(dir, served, "12MB", R"(, "batch_size": 8, "shuffle_clips": 8, "checkpoint_every": 25)");
  c.decode.frames = 16;
  c.decode.stride = 16;
  c.decode.size = 64;
  expect_epoch_finishes(dir, c, c.storage.budget);
}

// Every budget from the smallest kaiod accepts up to 8x that finishes an
// epoch of members of mixed sizes (two kinds of clip in one repo).
TEST_F(Guarantees, EveryAcceptedBudgetFinishesAnEpoch) {
  auto served = serve(dir, "--seed 16 --clips 12 --clips-per-archive 3 --seconds 6 --width 320 --height 240 --fps 30", [](const fs::path& repo) {
    std::string more = test::tool("kaio-mkdata").string() + " --layout llava --out " + (repo / "more").string() +
                       " --seed 17 --clips 10 --clips-per-archive 5 --seconds 2 --width 160 --height 120 --fps 24 >/dev/null 2>&1";
    ASSERT_EQ(std::system(more.c_str()), 0);
  });
  Config c = config_for(dir, served, "64MB", R"(, "checkpoint_every": 5)");
  c.decode.frames = 16;
  c.decode.stride = 8;
  c.decode.size = 48;
  uint64_t least = smallest_accepted(c);
  std::printf("smallest accepted budget: %llu\n", static_cast<unsigned long long>(least));
  size_t first = 0;
  for (uint64_t factor : {1, 2, 4, 8}) {
    size_t windows = 0;
    expect_epoch_finishes(dir, c, least * factor, &windows);
    if (factor == 1) first = windows;
    EXPECT_EQ(windows, first) << "every budget trains the same windows";
  }
}
