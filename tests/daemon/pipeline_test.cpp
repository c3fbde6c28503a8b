// The whole pipeline for real: kaio-mkdata writes a LLaVA-style dataset,
// kaio-hub serves it on loopback, the engine fetches, decodes, trains (tiny
// model, cpu backend) and deletes, while a sampler watches the disk.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "common/config.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/fs.h"
#include "daemon/engine.h"
#include "daemon/status.h"
#include "decode/shard.h"
#include "state/ledger.h"
#include "tests/support/datasets.h"
#include "tests/support/disk_sampler.h"
#include "tests/support/hub.h"
#include "tests/support/private_tmpfs.h"
#include "tests/support/progress_watchdog.h"
#include "tests/support/sandbox.h"
#include "tests/support/trace_file.h"

namespace fs = std::filesystem;
using namespace kaio;
using namespace std::chrono_literals;
using kaio::test::DiskSampler;
using kaio::test::ProgressSample;
using kaio::test::ProgressWatchdog;

namespace {

constexpr int kClips = 60;  // 6 per archive, 10 archives, about 18 MB: more than the 16 MB budget

// A dataset and a kaio-hub serving it, shared by the tests of this file.
class Hub {
 public:
  static Hub& get() {
    static Hub hub;
    return hub;
  }
  std::string endpoint() const { return process_->url(); }
  const fs::path& root() const { return root_; }

 private:
  Hub() {
    kaio::test::copy_dataset("--seed 7 --clips " + std::to_string(kClips) +
                                 " --clips-per-archive 6 --seconds 4 --width 640 --height 360 --fps 30",
                             root_ / "repos/kaio-test/llava");
    process_ = std::make_unique<kaio::test::HubProcess>(root_ / "repos");
    EXPECT_TRUE(process_->ok()) << "kaio-hub did not start";
  }
  kaio::test::Sandbox root_{"pipeline-hub"};
  std::unique_ptr<kaio::test::HubProcess> process_;
};

struct Trace : daemon::WindowObserver {
  std::mutex mutex;
  std::vector<std::pair<std::string, int>> windows;
  std::map<int, std::vector<std::pair<std::string, int>>> by_epoch;
  std::map<int64_t, double> losses;
  // When set, the captions the shards in this folder carry, by member, read
  // while their windows train (the ledger keeps no caption once a clip is deleted).
  fs::path shard_dir;
  std::map<std::string, std::string> captions;
  void on_window(int epoch, int64_t, const std::string& clip, int window) override {
    std::lock_guard lock(mutex);
    windows.emplace_back(clip, window);
    by_epoch[epoch].emplace_back(clip, window);
    if (shard_dir.empty()) return;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(shard_dir, ec)) {
      if (e.path().extension() != ".shard") continue;
      try {
        decode::ShardReader reader(e.path());
        for (int i = 0; i < reader.windows(); ++i) captions[reader.info(i).member] = reader.info(i).caption;
      } catch (const Error&) {  // deleted between the listing and the open
      }
    }
  }
  void on_step(int64_t step, double loss) override {
    std::lock_guard lock(mutex);
    losses[step] = loss;
  }
};

struct Pipeline : testing::Test {
  kaio::test::Sandbox dir{"pipeline"};

  Config config(const std::string& budget = "16MB", const std::string& extra_train = "") {
    std::string json =
        R"({"source": {"endpoint": ")" + Hub::get().endpoint() +
        R"(", "repo": "kaio-test/llava", "include": ["**/*.tar.gz"], "captions": ["**/*_cap_processed.json"]},
      "storage": {"cache_dir": ")" +
        (dir / "cache").string() + R"(", "state_dir": ")" + (dir / "state").string() + R"(", "budget": ")" + budget +
        R"(", "free_disk_floor": "10MB"},
      "decode": {"frames": 8, "stride": 8, "fps": 4, "size": 32, "workers": 2},
      "train": {"backend": "cpu", "model": "tiny", "batch_size": 4, "checkpoint_every": 4, "shuffle_clips": 4,
                "lr": 0.001, "warmup_steps": 2, "threads": 1, "seed": 3)" +
        extra_train + R"(},
      "control": {"socket": ")" +
        (dir / "kaiod.sock").string() + R"("}})";
    return parse_config(json, "pipeline-test.json");
  }

  // A no-progress watchdog on an engine: fails the test when its status stays
  // in budget-wait with nothing moving (tests/support/progress_watchdog.h).
  static std::unique_ptr<ProgressWatchdog> watch(daemon::Engine& engine) {
    return std::make_unique<ProgressWatchdog>([&engine]() -> std::optional<ProgressSample> {
      return kaio::test::progress_of(daemon::to_json(engine.status()));
    });
  }

  // Until the engine is done or failed. `limit` bounds a hang only (generous);
  // a budget-wait with nothing moving ends it sooner, through the watchdog.
  static void wait_finished(daemon::Engine& engine, std::chrono::seconds limit) {
    auto watchdog = watch(engine);
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!engine.finished() && !watchdog->tripped() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(50ms);
    EXPECT_TRUE(engine.finished() || watchdog->tripped()) << "the engine did not finish within " << limit.count()
                                                          << " s; status: " << daemon::to_json(engine.status()).dump();
  }
};

// The regular files left under `dir`, for "nothing left behind" checks.
std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> found;
  if (!fs::exists(dir)) return found;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) found.push_back(fs::relative(e.path(), dir).string());
  return found;
}

}  // namespace

// Runs the whole dataset under `budget` and checks what every run must hold:
// done, every clip trained once and deleted, the budget never exceeded.
void run_whole_dataset(Pipeline& p, const std::string& budget) {
  Config c = p.config(budget);
  Trace trace;
  trace.shard_dir = p.dir / "cache" / "work";
  // The engine runs in this process: its deleted-but-open or mapped files are ours.
  DiskSampler sampler({p.dir / "cache", p.dir / "state"}, ::getpid());
  {
    daemon::Engine engine(c, &trace);
    engine.start();
    Pipeline::wait_finished(engine, 900s);
    auto s = engine.status();
    EXPECT_EQ(s.state, "done") << s.last_error << " (" << s.state_detail << ")";
    EXPECT_EQ(s.files.total, kClips / 6);
    EXPECT_EQ(s.files.failed, 0);
    EXPECT_EQ(s.clips.ready, 0);
    EXPECT_EQ(s.clips.deleted, kClips);  // every clip deleted after the checkpoint covering it
    EXPECT_EQ(s.train.backend, "cpu");
    EXPECT_GT(s.train.step, 0);
    EXPECT_EQ(s.train.samples, static_cast<int64_t>(trace.windows.size()));
    EXPECT_LE(s.peak_reserved_bytes, c.storage.budget);
  }
  sampler.finish();
  size_t captioned = 0;
  for (const auto& [member, caption] : trace.captions) captioned += !caption.empty();
  EXPECT_EQ(captioned, static_cast<size_t>(kClips)) << "source.captions attaches kaio-mkdata's caption to every clip";
  std::set<std::pair<std::string, int>> unique(trace.windows.begin(), trace.windows.end());
  EXPECT_EQ(unique.size(), trace.windows.size()) << "a window was trained twice";
  EXPECT_EQ(trace.windows.size(), kClips * 2u) << "clips of 4 s at 4 fps give 2 windows of 8 frames each";
  uint64_t dataset = 0;
  for (const auto& e : fs::recursive_directory_iterator(Hub::get().root()))
    if (e.is_regular_file() && e.path().extension() == ".gz") dataset += e.file_size();
  EXPECT_GT(dataset, c.storage.budget) << "the dataset must be larger than the budget";
  std::printf("pipeline: dataset %llu bytes, %zu windows, peak disk %llu / budget %llu over %lld samples\n",
              static_cast<unsigned long long>(dataset), trace.windows.size(),
              static_cast<unsigned long long>(sampler.peak()), static_cast<unsigned long long>(c.storage.budget),
              static_cast<long long>(sampler.samples()));
  EXPECT_LE(sampler.peak(), c.storage.budget)
      << sampler.peak_detail() << "; deleted files held at most: " << sampler.peak_deleted()
      << " bytes: " << sampler.peak_deleted_detail();
  EXPECT_EQ(files_under(p.dir / "cache"), std::vector<std::string>{})
      << "shards, downloads and temporaries are all gone";
  // After the run: nothing deleted is still held open or mapped by this process.
  auto held = kaio::test::deleted_but_held(::getpid(), {(p.dir / "cache").string(), (p.dir / "state").string()});
  std::string held_text;
  for (const auto& f : held)
    held_text += f.path + " (" + std::to_string(f.bytes) + " bytes, " + (f.open ? "open" : "mapped") + ") ";
  EXPECT_TRUE(held.empty()) << "deleted files still held after the engine is gone: " << held_text;
}

TEST_F(Pipeline, BudgetHeldAndEveryWindowTrainedOnce) {
  run_whole_dataset(*this, "16MB");
}

// 8 MB leaves about 1.3 MB beside three checkpoints of 1.85 MB and the ledger:
// archives must stream, and extraction ahead must not take the space the
// shards of members in flight need (it did: the pipeline sat in budget-wait).
TEST_F(Pipeline, BudgetNearTheWorkingSetStillFinishes) {
  run_whole_dataset(*this, "8MB");
}

namespace {

// Lines appended to a file since the last call (a partial last line waits).
struct NewLines {
  fs::path file;
  uint64_t offset = 0;
  size_t lines = 0;
  explicit NewLines(fs::path f) : file(std::move(f)) {
    std::error_code ec;
    auto size = fs::file_size(file, ec);
    offset = ec ? 0 : size;
  }
  size_t poll() {
    std::ifstream in(file, std::ios::binary);
    if (!in) return lines;
    in.seekg(static_cast<std::streamoff>(offset));
    char buf[65536];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      auto n = static_cast<size_t>(in.gcount());
      offset += n;
      lines += static_cast<size_t>(std::count(buf, buf + n, '\n'));
    }
    return lines;
  }
};

std::string file_tail(const fs::path& file, size_t n = 2000) {
  std::ifstream in(file, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > n ? text.substr(text.size() - n) : text;
}

}  // namespace

// The same run as an uninterrupted one, in a child process killed with
// SIGKILL at points drawn from its observed progress (lines in its log and in
// its window trace), never from the clock: the verdict does not depend on the
// machine's speed or load. Rounds go on, each from fresh folders, until the
// wanted kills have landed.
TEST_F(Pipeline, KilledAndRestartedTrainsTheSameSequence) {
  // Reference: one uninterrupted run.
  Trace reference;
  {
    daemon::Engine engine(config(), &reference);
    engine.start();
    wait_finished(engine, 900s);
    ASSERT_EQ(engine.status().state, "done");
  }
  // A whole run's trace events (a line per window and per step); log lines come on top.
  const size_t reference_events = reference.windows.size() + reference.losses.size();
  const int kills_wanted = 5;
  const int max_events = static_cast<int>(std::max<size_t>(2, reference_events * 2 / kills_wanted));
  std::mt19937 rng(12345);
  int kills = 0, rounds = 0, lives = 0;
  std::vector<int> kill_points;
  while (kills < kills_wanted && rounds < 10) {
    ++rounds;
    fs::remove_all(dir);
    fs::create_directories(dir);
    const fs::path trace_file = dir / "trace.txt", log_file = dir / "engine.log";
    bool finished = false;
    while (!finished) {
      NewLines trace_lines(trace_file), log_lines(log_file);
      ++lives;
      pid_t child = ::fork();
      if (child == 0) {
        // The engine's log (spdlog writes to stderr) goes to the log file: its lines are progress events.
        int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) ::dup2(fd, 2);
        test::TraceFile trace(trace_file);
        try {
          daemon::Engine engine(config(), &trace);
          engine.start();
          wait_finished(engine, 900s);
          auto st = engine.status();
          if (st.state != "done")
            std::fprintf(stderr, "child: ended in state %s: %s\n", st.state.c_str(), st.last_error.c_str());
          ::_exit(st.state == "done" ? 0 : 3);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "child: %s\n", e.what());
          ::_exit(4);
        }
      }
      ASSERT_GT(child, 0);
      int status = 0;
      bool exited = false;
      if (kills < kills_wanted) {
        const int k = std::uniform_int_distribution<int>(1, max_events)(rng);
        // A life that neither reaches its kill point nor exits within this is stuck.
        auto limit = std::chrono::steady_clock::now() + 900s;
        bool reached = false;
        while (std::chrono::steady_clock::now() < limit) {
          if (::waitpid(child, &status, WNOHANG) == child) {
            exited = true;
            break;
          }
          if (trace_lines.poll() + log_lines.poll() >= static_cast<size_t>(k)) {
            reached = true;
            break;
          }
          std::this_thread::sleep_for(5ms);  // poll interval only: the kill point is the event count
        }
        if (reached) {
          ::kill(child, SIGKILL);
          ::waitpid(child, &status, 0);
          ++kills;
          kill_points.push_back(k);
          continue;
        }
        if (!exited) {
          ::kill(child, SIGKILL);
          ::waitpid(child, &status, 0);
          FAIL() << "a life neither reached its kill point (" << k
                 << " events) nor finished within 900 s; log: " << file_tail(log_file);
        }
      } else {
        ::waitpid(child, &status, 0);  // the child bounds its own run (wait_finished)
      }
      ASSERT_TRUE(WIFEXITED(status)) << file_tail(log_file);
      ASSERT_EQ(WEXITSTATUS(status), 0) << file_tail(log_file);
      finished = true;
    }
    // Each round is compared with the uninterrupted run; when it finished
    // before the kills were done, a fresh round goes on counting.
    // Steps after the last checkpoint are trained again after a kill; the last
    // word on each step must equal the uninterrupted run's.
    std::map<int64_t, std::vector<std::pair<std::string, int>>> by_step;
    std::map<int64_t, double> losses;
    std::map<int64_t, std::vector<std::pair<std::string, int>>> current;
    std::ifstream in(trace_file);
    std::string word;
    while (in >> word) {
      if (word == "loss") {
        long long step;
        double loss;
        in >> step >> loss;
        by_step[step] = current[step];
        current.erase(step);
        losses[step] = loss;
      } else {  // "w <epoch> <step> <clip> <window>"
        int epoch, window;
        long long step;
        std::string clip;
        in >> epoch >> step >> clip >> window;
        current[step].emplace_back(clip, window);
      }
    }
    std::vector<std::pair<std::string, int>> resumed;
    for (auto& [step, windows] : by_step) resumed.insert(resumed.end(), windows.begin(), windows.end());
    size_t first_diff = 0;
    while (first_diff < std::min(resumed.size(), reference.windows.size()) &&
           resumed[first_diff] == reference.windows[first_diff])
      ++first_diff;
    EXPECT_EQ(resumed, reference.windows)
        << "the window sequence differs from the uninterrupted run at window " << first_diff << " of "
        << reference.windows.size() << " (resumed has " << resumed.size() << ")";
    std::printf("steps in trace: %zu, reference steps %zu\n", by_step.size(), reference.losses.size());
    int64_t loss_mismatches = 0;
    for (auto& [step, loss] : reference.losses)
      if (std::abs(losses[step] - loss) > 1e-5 * std::max(1.0, std::abs(loss))) ++loss_mismatches;
    std::set<std::pair<std::string, int>> unique(resumed.begin(), resumed.end());
    std::string points;
    for (int k : kill_points) points += (points.empty() ? "" : ",") + std::to_string(k);
    std::printf(
        "kills survived %d (after progress events %s of at most %d; %d rounds, %d lives), windows lost %zd, repeated "
        "%zd, "
        "loss mismatches %lld\n",
        kills, points.c_str(), max_events, rounds, lives,
        static_cast<ssize_t>(reference.windows.size()) - static_cast<ssize_t>(unique.size()),
        static_cast<ssize_t>(resumed.size() - unique.size()), static_cast<long long>(loss_mismatches));
    EXPECT_EQ(loss_mismatches, 0);
    EXPECT_EQ(files_under(dir / "cache"), std::vector<std::string>{}) << "no orphan file";
  }
  EXPECT_EQ(kills, kills_wanted) << "the wanted kills did not land in " << rounds << " rounds";
}

// A run with more room (64 MB, `parallel_files` downloads ahead) is stopped
// once it has `want` downloads on disk, whole or as .part; then the same state
// is run under 8 MB, which must finish with every window trained once.
void restart_with_kept_downloads(Pipeline& p, int parallel_files, size_t want) {
  Trace trace;
  size_t kept = 0;
  auto downloads = [&] { return files_under(p.dir / "cache" / "downloads").size(); };
  {
    Config c = p.config("64MB");
    c.fetch.parallel_files = parallel_files;
    daemon::Engine engine(c, &trace);
    engine.start();
    auto deadline = std::chrono::steady_clock::now() + 600s;
    while (downloads() < want && !engine.finished() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    engine.stop();
    kept = downloads();
  }
  ASSERT_GE(kept, want) << "the first run must leave downloads ahead on disk";
  {
    daemon::Engine engine(p.config("8MB"), &trace);
    engine.start();
    Pipeline::wait_finished(engine, 900s);
    auto s = engine.status();
    EXPECT_EQ(s.state, "done") << s.state_detail << "; reserved " << s.reserved_bytes << " of " << s.budget_bytes;
    EXPECT_LE(s.peak_reserved_bytes, s.budget_bytes);
  }
  std::set<std::pair<std::string, int>> unique(trace.windows.begin(), trace.windows.end());
  EXPECT_EQ(unique.size(), static_cast<size_t>(kClips * 2)) << "every window trained";
  EXPECT_EQ(trace.windows.size(), unique.size()) << "a window was trained twice";
  EXPECT_TRUE(downloads() == 0);
  std::printf("kept downloads: %zu left by the 64 MB run; the 8 MB run trained %zu windows (%zu distinct)\n", kept,
              trace.windows.size(), unique.size());
}

// The kept downloads fit at start-up but leave no room for the checkpoint slots
// and decoding: they are given back (at start-up here; when decoding waits in
// the 200-kill soak that found this) instead of kaiod waiting for ever.
TEST_F(Pipeline, DownloadsKeptAheadAreGivenBackWhenTheWorkingSetNeedsThem) {
  restart_with_kept_downloads(*this, 1, 2);
}

// More kept downloads than the budget holds at all: they are removed at
// start-up (they can be fetched again) instead of kaiod refusing to start.
TEST_F(Pipeline, DownloadsKeptOverTheBudgetAreRemovedAtStart) {
  restart_with_kept_downloads(*this, 4, 5);
}

// The pause comes once training has made progress (observed, not timed).
TEST_F(Pipeline, PauseStopsTrainingAndSurvivesARestart) {
  daemon::Peer admin{::getpid(), 0, 0, true};
  daemon::Peer stranger{::getpid(), 65534, 65534, false};
  Config c = config("16MB", R"(, "checkpoint_every": 100)");
  // The engine runs in this process: its deleted-but-open or mapped files are ours.
  DiskSampler sampler({dir / "cache", dir / "state"}, ::getpid());
  {
    daemon::Engine engine(c);
    engine.start();
    EXPECT_THROW(engine.handle_control("pause", {}, stranger), Error);
    {
      auto watchdog = watch(engine);
      auto limit = std::chrono::steady_clock::now() + 600s;  // a bound for a hang only
      while (engine.status().train.step < 6 && !engine.finished() && !watchdog->tripped() &&
             std::chrono::steady_clock::now() < limit)
        std::this_thread::sleep_for(20ms);
      ASSERT_GE(engine.status().train.step, 6) << daemon::to_json(engine.status()).dump();
    }
    // A running cpu trainer shows its speed; MFU is unknown on the cpu backend.
    const auto speed = engine.status().train;
    EXPECT_GT(speed.step_seconds, 0);
    EXPECT_GT(speed.tokens_per_second, 0);
    EXPECT_EQ(speed.mfu, -1);
    auto reply = engine.handle_control("pause", {{"reason", "test"}}, admin);
    EXPECT_TRUE(reply["paused"].get<bool>());
    EXPECT_EQ(engine.status().state, "paused");
    // The pause's checkpoint covers every step trained (checkpoint_every is
    // 100: no other checkpoint comes); wait for it, bounded.
    auto limit = std::chrono::steady_clock::now() + 300s;
    while (engine.status().train.checkpoint_step != engine.status().train.step &&
           std::chrono::steady_clock::now() < limit)
      std::this_thread::sleep_for(20ms);
    auto s1 = engine.status();
    EXPECT_EQ(s1.train.checkpoint_step, s1.train.step) << "pause writes a checkpoint";
    std::this_thread::sleep_for(
        1500ms);  // watching for a step that must not come (any wait can only miss one, never invent one)
    EXPECT_EQ(engine.status().train.step, s1.train.step) << "no step while paused";
    // Paused, with the checkpoint durable: clips it covers are deleted, and
    // nothing deleted may still hold disk space through this process.
    auto held = kaio::test::deleted_but_held(::getpid(), {(dir / "cache").string(), (dir / "state").string()});
    uint64_t held_bytes = 0;
    std::string held_text;
    for (const auto& f : held) {
      held_bytes += f.bytes;
      held_text += f.path + " (" + std::to_string(f.bytes) + " bytes, " + (f.open ? "open" : "mapped") + ") ";
    }
    EXPECT_EQ(held_bytes, 0u) << "while paused, deleted files still hold disk space: " << held_text;
  }
  {
    daemon::Engine engine(config());
    engine.start();
    auto s = engine.status();
    EXPECT_TRUE(s.paused);
    EXPECT_EQ(s.pause_reason, "test");
    engine.handle_control("resume", {}, admin);
    wait_finished(engine, 900s);
    EXPECT_EQ(engine.status().state, "done");
    auto ls = engine.handle_control("ls", {{"state", "deleted"}}, stranger);
    EXPECT_EQ(ls["clips"].size(), static_cast<size_t>(kClips));
    EXPECT_THROW(engine.handle_control("ls", {{"state", "bogus"}}, stranger), Error);
  }
  sampler.finish();
  EXPECT_LE(sampler.peak(), c.storage.budget)
      << sampler.peak_detail() << "; deleted files held at most: " << sampler.peak_deleted()
      << " bytes: " << sampler.peak_deleted_detail();
}

// Epochs re-download the dataset (storage is the constraint) in a new order,
// and each trains every window exactly once.
TEST_F(Pipeline, SecondEpochTrainsEveryWindowOnceMoreInANewOrder) {
  Trace trace;
  Config c = config("16MB", R"(, "epochs": 2)");
  // The engine runs in this process: its deleted-but-open or mapped files are ours.
  DiskSampler sampler({dir / "cache", dir / "state"}, ::getpid());
  {
    daemon::Engine engine(c, &trace);
    engine.start();
    wait_finished(engine, 900s);
    auto s = engine.status();
    EXPECT_EQ(s.state, "done") << s.last_error;
    EXPECT_EQ(s.train.epoch, 1);
    EXPECT_EQ(s.files.done, kClips / 6) << "every file downloaded and decoded again in epoch 1";
  }
  ASSERT_EQ(trace.by_epoch.size(), 2u);
  const auto& first = trace.by_epoch[0];
  const auto& second = trace.by_epoch[1];
  EXPECT_EQ(first.size(), kClips * 2u);
  EXPECT_EQ(second.size(), kClips * 2u);
  EXPECT_EQ(std::set(first.begin(), first.end()).size(), first.size()) << "a window repeated in epoch 0";
  EXPECT_EQ(std::set(first.begin(), first.end()), std::set(second.begin(), second.end()))
      << "the same windows each epoch";
  EXPECT_NE(first, second) << "the plan shuffles per epoch";
  EXPECT_EQ(files_under(dir / "cache"), std::vector<std::string>{});
  sampler.finish();
  std::printf("two epochs: peak disk %llu / budget %llu (%s); deleted files held at most %llu bytes: %s\n",
              static_cast<unsigned long long>(sampler.peak()), static_cast<unsigned long long>(c.storage.budget),
              sampler.peak_detail().c_str(), static_cast<unsigned long long>(sampler.peak_deleted()),
              sampler.peak_deleted_detail().c_str());
  EXPECT_LE(sampler.peak(), c.storage.budget)
      << sampler.peak_detail() << "; deleted files held at most: " << sampler.peak_deleted()
      << " bytes: " << sampler.peak_deleted_detail();
}

namespace {

uint64_t free_bytes(const fs::path& p) {
  return fs::space(p).available;
}

}  // namespace

// The filesystem fills up below the budget (another program writes to it):
// work stops with a clear disk-full state, nothing is lost, and the run goes on
// by itself once space returns.
TEST_F(Pipeline, FullFilesystemWaitsAndLosesNothing) {
  Config c = config("16MB");  // free_disk_floor 10MB; starts kaio-hub before the fork
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (!kaio::test::mount_private_tmpfs(dir, "48m")) ::_exit(77);
    auto check = [](bool ok, const std::string& what) {
      if (ok) return;
      std::fprintf(stderr, "FAILED: %s\n", what.c_str());
      ::_exit(1);
    };
    Trace trace;
    std::string seen_state, seen_detail;
    {
      daemon::Engine engine(c, &trace);
      engine.start();
      auto deadline = std::chrono::steady_clock::now() + 600s;
      while (engine.status().train.step < 4 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
      check(engine.status().train.step >= 4, "training started");
      // Leave half the floor free: reservations must wait, the ledger can still write.
      uint64_t fill = free_bytes(dir) - c.storage.free_disk_floor / 2;
      {
        Fd filler(::open((dir / "filler").c_str(), O_CREAT | O_WRONLY, 0600));
        check(filler.get() >= 0 && ::posix_fallocate(filler.get(), 0, static_cast<off_t>(fill)) == 0,
              "filling the tmpfs");
      }
      deadline = std::chrono::steady_clock::now() + 300s;
      while (std::chrono::steady_clock::now() < deadline) {
        auto st = engine.status();
        if (st.state == "disk-full") {
          seen_state = st.state;
          seen_detail = st.state_detail;
          break;
        }
        check(st.state != "done" && st.state != "error", "the run went on while the disk was full: " + st.state);
        std::this_thread::sleep_for(50ms);
      }
      std::this_thread::sleep_for(1s);
      check(engine.status().state == "disk-full", "disk-full is shown while the disk stays full");
      fs::remove(dir / "filler");
      Pipeline::wait_finished(engine, 900s);
      auto st = engine.status();
      check(st.state == "done", "done after space returned, got " + st.state + " " + st.last_error);
      check(st.peak_reserved_bytes <= c.storage.budget, "budget held");
    }
    std::set<std::pair<std::string, int>> unique(trace.windows.begin(), trace.windows.end());
    check(unique.size() == trace.windows.size(), "no window repeated");
    check(trace.windows.size() == size_t{kClips} * 2, "no window lost: " + std::to_string(trace.windows.size()));
    check(files_under(dir / "cache").empty(), "nothing left behind");
    std::printf("disk full: state %s (%s); resumed when space returned; windows %zu, lost 0, repeated 0\n",
                seen_state.c_str(), seen_detail.c_str(), trace.windows.size());
    std::fflush(stdout);
    ::_exit(0);
  }
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + 2000s;
  while (::waitpid(child, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      FAIL() << "the full-filesystem run did not end within 2000 s";
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(WIFEXITED(status)) << "child died by signal " << WTERMSIG(status);
  if (WEXITSTATUS(status) == 77)
    GTEST_SKIP() << "skipped: cannot mount a private tmpfs here (needs root or user namespaces)";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "see FAILED: above";
}

// SIGHUP's part: the budget, files at once, the bandwidth cap and decode
// workers change in a running engine; a budget below the working set is refused.
TEST_F(Pipeline, ReloadChangesTheBudgetAndParallelism) {
  daemon::Engine engine(config("8MB"));
  engine.start();
  Config bigger = config("16MB");
  bigger.fetch.parallel_files = 1;
  bigger.fetch.bandwidth_limit = 50'000'000;
  bigger.decode.workers = 1;
  engine.reload(bigger);
  EXPECT_EQ(engine.status().budget_bytes, 16'000'000u);
  try {
    engine.reload(config("6MB"));
    FAIL() << "a budget below the working set must be refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::budget);
    EXPECT_NE(std::string(e.what()).find("working set"), std::string::npos) << e.what();
  }
  EXPECT_EQ(engine.status().budget_bytes, 16'000'000u) << "a refused reload changes nothing";
  wait_finished(engine, 900s);
  auto s = engine.status();
  EXPECT_EQ(s.state, "done") << s.last_error;
  EXPECT_EQ(s.clips.deleted, kClips);
  EXPECT_LE(s.peak_reserved_bytes, 16'000'000u);
}

TEST_F(Pipeline, TooSmallBudgetAndSecondDaemonAreRefusedClearly) {
  try {
    daemon::Engine engine(config("6MB"));
    FAIL() << "a 6MB budget cannot hold three checkpoints of the tiny model beside the ledger and a chunk of shards";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::budget);
    std::string what = e.what();
    for (const char* part : {"needs at least", "3 checkpoints of", "train.shuffle_clips", "ledger"})
      EXPECT_NE(what.find(part), std::string::npos) << part << " missing in: " << what;
  }
  fs::remove_all(dir);
  daemon::Engine first(config());
  try {
    daemon::Engine second(config());
    FAIL() << "two daemons on the same folders";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another kaiod"), std::string::npos) << e.what();
  }
}
