// The whole pipeline for real: kaio-mkdata writes a LLaVA-style dataset,
// kaio-hub serves it on loopback, the engine fetches, decodes, trains (tiny
// model, cpu backend) and deletes, while a sampler watches the disk.
#include <sched.h>
#include <sys/mount.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "common/config.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/fs.h"
#include "daemon/engine.h"
#include "state/ledger.h"
#include "tests/support/disk_sampler.h"

namespace fs = std::filesystem;
using namespace kaio;
using namespace std::chrono_literals;
using kaio::test::DiskSampler;

namespace {

const std::string kBuild = KAIO_BUILD_DIR;
constexpr int kClips = 60;  // 6 per archive, 10 archives, about 18 MB: more than the 16 MB budget

int run(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A dataset and a kaio-hub serving it, shared by the tests of this file.
class Hub {
 public:
  static Hub& get() {
    static Hub hub;
    return hub;
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }
  ~Hub() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    fs::remove_all(root_);
  }

 private:
  Hub() {
    root_ = fs::temp_directory_path() / ("kaio-pipeline-hub-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "repos" / "kaio-test");
    EXPECT_EQ(run(kBuild + "/tools/kaio-mkdata/kaio-mkdata --layout llava --out " + (root_ / "repos/kaio-test/llava").string() +
                  " --seed 7 --clips " + std::to_string(kClips) + " --clips-per-archive 6 --seconds 4 --width 640 --height 360 --fps 30 >/dev/null 2>&1"),
              0);
    fs::path port_file = root_ / "port";
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string hub = kBuild + "/tools/kaio-hub/kaio-hub";
      ::execl(hub.c_str(), hub.c_str(), "--root", (root_ / "repos").c_str(), "--port", "0", "--port-file", port_file.c_str(),
              "--cdn-port", "0", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 100 && port_ == 0; ++i) {
      std::this_thread::sleep_for(50ms);
      std::ifstream in(port_file);
      in >> port_;
    }
    EXPECT_NE(port_, 0) << "kaio-hub did not start";
  }
  fs::path root_;
  pid_t pid_ = -1;
  int port_ = 0;
};

struct Trace : daemon::WindowObserver {
  std::mutex mutex;
  std::vector<std::pair<std::string, int>> windows;
  std::map<int, std::vector<std::pair<std::string, int>>> by_epoch;
  std::map<int64_t, double> losses;
  void on_window(int epoch, int64_t, const std::string& clip, int window) override {
    std::lock_guard lock(mutex);
    windows.emplace_back(clip, window);
    by_epoch[epoch].emplace_back(clip, window);
  }
  void on_step(int64_t step, double loss) override {
    std::lock_guard lock(mutex);
    losses[step] = loss;
  }
};

struct Pipeline : testing::Test {
  fs::path dir = fs::temp_directory_path() / ("kaio-pipeline-" + std::to_string(::getpid()) + "-" +
                                              testing::UnitTest::GetInstance()->current_test_info()->name());
  void SetUp() override {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override { fs::remove_all(dir); }

  Config config(const std::string& budget = "16MB", const std::string& extra_train = "") {
    std::string json = R"({"source": {"endpoint": ")" + Hub::get().endpoint() + R"(", "repo": "kaio-test/llava", "include": ["**/*.tar.gz"], "captions": ["**/*_cap_processed.json"]},
      "storage": {"cache_dir": ")" + (dir / "cache").string() + R"(", "state_dir": ")" + (dir / "state").string() +
                       R"(", "budget": ")" + budget + R"(", "free_disk_floor": "10MB"},
      "decode": {"frames": 8, "stride": 8, "fps": 4, "size": 32, "workers": 2},
      "train": {"backend": "cpu", "model": "tiny", "batch_size": 4, "checkpoint_every": 4, "shuffle_clips": 4,
                "lr": 0.001, "warmup_steps": 2, "threads": 1, "seed": 3)" + extra_train + R"(},
      "control": {"socket": ")" + (dir / "kaiod.sock").string() + R"("}})";
    return parse_config(json, "pipeline-test.json");
  }

  static void wait_finished(daemon::Engine& engine, std::chrono::seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!engine.finished() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
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
  DiskSampler sampler({p.dir / "cache", p.dir / "state"});
  {
    daemon::Engine engine(c, &trace);
    engine.start();
    Pipeline::wait_finished(engine, 240s);
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
  {
    auto ledger = state::Ledger::open(p.dir / "state");
    size_t captioned = 0;
    for (const auto& clip : ledger.list_clips())
      if (!clip.caption.empty()) ++captioned;
    EXPECT_EQ(captioned, static_cast<size_t>(kClips)) << "source.captions attaches kaio-mkdata's caption to every clip";
  }
  std::set<std::pair<std::string, int>> unique(trace.windows.begin(), trace.windows.end());
  EXPECT_EQ(unique.size(), trace.windows.size()) << "a window was trained twice";
  EXPECT_EQ(trace.windows.size(), kClips * 2u) << "clips of 4 s at 4 fps give 2 windows of 8 frames each";
  uint64_t dataset = 0;
  for (const auto& e : fs::recursive_directory_iterator(fs::temp_directory_path() / ("kaio-pipeline-hub-" + std::to_string(::getpid()))))
    if (e.is_regular_file() && e.path().extension() == ".gz") dataset += e.file_size();
  EXPECT_GT(dataset, c.storage.budget) << "the dataset must be larger than the budget";
  std::printf("pipeline: dataset %llu bytes, %zu windows, peak disk %llu / budget %llu over %lld samples\n", static_cast<unsigned long long>(dataset), trace.windows.size(),
              static_cast<unsigned long long>(sampler.peak()), static_cast<unsigned long long>(c.storage.budget), static_cast<long long>(sampler.samples()));
  EXPECT_LE(sampler.peak(), c.storage.budget);
  EXPECT_EQ(files_under(p.dir / "cache"), std::vector<std::string>{}) << "shards, downloads and temporaries are all gone";
}

TEST_F(Pipeline, BudgetHeldAndEveryWindowTrainedOnce) { run_whole_dataset(*this, "16MB"); }

// 8 MB leaves about 1.3 MB beside three checkpoints of 1.85 MB and the ledger:
// archives must stream, and extraction ahead must not take the space the
// shards of members in flight need (it did: the pipeline sat in budget-wait).
TEST_F(Pipeline, BudgetNearTheWorkingSetStillFinishes) { run_whole_dataset(*this, "8MB"); }

TEST_F(Pipeline, KilledAndRestartedTrainsTheSameSequence) {
  // Reference: one uninterrupted run.
  Trace reference;
  {
    daemon::Engine engine(config(), &reference);
    engine.start();
    wait_finished(engine, 240s);
    ASSERT_EQ(engine.status().state, "done");
  }
  fs::remove_all(dir);
  fs::create_directories(dir);

  // The same run in a child process that is killed with SIGKILL at random moments.
  fs::path trace_file = dir / "trace.txt";
  std::mt19937 rng(12345);
  int kills = 0;
  const int max_kills = 5;
  for (int round = 0; round < 40; ++round) {
    pid_t child = ::fork();
    if (child == 0) {
      struct FileTrace : daemon::WindowObserver {
        FILE* out;
        int64_t step_ = 0;
        std::string pending;
        void on_window(int, int64_t step, const std::string& clip, int window) override {
          step_ = step;
          pending += std::to_string(step) + " " + clip + " " + std::to_string(window) + "\n";
        }
        void on_step(int64_t step, double loss) override {
          std::fprintf(out, "%sloss %lld %.9g\n", pending.c_str(), static_cast<long long>(step), loss);
          std::fflush(out);
          pending.clear();
        }
      } trace;
      trace.out = std::fopen(trace_file.c_str(), "a");
      try {
        daemon::Engine engine(config(), &trace);
        engine.start();
        wait_finished(engine, 240s);
        ::_exit(engine.status().state == "done" ? 0 : 3);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child: %s\n", e.what());
        ::_exit(4);
      }
    }
    bool kill_now = kills < max_kills;
    int status = 0;
    if (kill_now) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(100, 800)(rng)));
      if (::waitpid(child, &status, WNOHANG) == 0) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
        ++kills;
        continue;
      }
    } else {
      ::waitpid(child, &status, 0);
    }
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    break;
  }
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
    } else {
      std::string clip;
      int window;
      in >> clip >> window;
      current[std::stoll(word)].emplace_back(clip, window);
    }
  }
  std::vector<std::pair<std::string, int>> resumed;
  for (auto& [step, windows] : by_step) resumed.insert(resumed.end(), windows.begin(), windows.end());
  size_t first_diff = 0;
  while (first_diff < std::min(resumed.size(), reference.windows.size()) && resumed[first_diff] == reference.windows[first_diff]) ++first_diff;
  EXPECT_EQ(resumed, reference.windows) << "the window sequence differs from the uninterrupted run at window " << first_diff
                                        << " of " << reference.windows.size() << " (resumed has " << resumed.size() << ")";
  std::printf("steps in trace: %zu, reference steps %zu\n", by_step.size(), reference.losses.size());
  int64_t loss_mismatches = 0;
  for (auto& [step, loss] : reference.losses)
    if (std::abs(losses[step] - loss) > 1e-5 * std::max(1.0, std::abs(loss))) ++loss_mismatches;
  std::set<std::pair<std::string, int>> unique(resumed.begin(), resumed.end());
  std::printf("kills survived %d, windows lost %zd, repeated %zd, loss mismatches %lld\n", kills,
              static_cast<ssize_t>(reference.windows.size()) - static_cast<ssize_t>(unique.size()),
              static_cast<ssize_t>(resumed.size() - unique.size()), static_cast<long long>(loss_mismatches));
  EXPECT_EQ(loss_mismatches, 0);
  EXPECT_GE(kills, 3) << "the run ended before the kills could land";
  EXPECT_EQ(files_under(dir / "cache"), std::vector<std::string>{}) << "no orphan file";
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
    auto deadline = std::chrono::steady_clock::now() + 120s;
    while (downloads() < want && !engine.finished() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(5ms);
    engine.stop();
    kept = downloads();
  }
  ASSERT_GE(kept, want) << "the first run must leave downloads ahead on disk";
  {
    daemon::Engine engine(p.config("8MB"), &trace);
    engine.start();
    Pipeline::wait_finished(engine, 240s);
    auto s = engine.status();
    EXPECT_EQ(s.state, "done") << s.state_detail << "; reserved " << s.reserved_bytes << " of " << s.budget_bytes;
    EXPECT_LE(s.peak_reserved_bytes, s.budget_bytes);
  }
  std::set<std::pair<std::string, int>> unique(trace.windows.begin(), trace.windows.end());
  EXPECT_EQ(unique.size(), static_cast<size_t>(kClips * 2)) << "every window trained";
  EXPECT_EQ(trace.windows.size(), unique.size()) << "a window was trained twice";
  EXPECT_TRUE(downloads() == 0);
  std::printf("kept downloads: %zu left by the 64 MB run; the 8 MB run trained %zu windows (%zu distinct)\n", kept, trace.windows.size(),
              unique.size());
}

// The kept downloads fit at start-up but leave no room for the checkpoint slots
// and decoding: they are given back (at start-up here; when decoding waits in
// the 200-kill soak that found this) instead of kaiod waiting for ever.
TEST_F(Pipeline, DownloadsKeptAheadAreGivenBackWhenTheWorkingSetNeedsThem) { restart_with_kept_downloads(*this, 1, 2); }

// More kept downloads than the budget holds at all: they are removed at
// start-up (they can be fetched again) instead of kaiod refusing to start.
TEST_F(Pipeline, DownloadsKeptOverTheBudgetAreRemovedAtStart) { restart_with_kept_downloads(*this, 4, 5); }

TEST_F(Pipeline, PauseStopsTrainingAndSurvivesARestart) {
  daemon::Peer admin{::getpid(), 0, 0, true};
  daemon::Peer stranger{::getpid(), 65534, 65534, false};
  {
    daemon::Engine engine(config("16MB", R"(, "checkpoint_every": 100)"));
    engine.start();
    EXPECT_THROW(engine.handle_control("pause", {}, stranger), Error);
    auto reply = engine.handle_control("pause", {{"reason", "test"}}, admin);
    EXPECT_TRUE(reply["paused"].get<bool>());
    auto s1 = engine.status();
    EXPECT_EQ(s1.state, "paused");
    std::this_thread::sleep_for(1500ms);
    EXPECT_EQ(engine.status().train.step, s1.train.step) << "no step while paused";
    EXPECT_EQ(engine.status().train.checkpoint_step, s1.train.step) << "pause writes a checkpoint";
  }
  {
    daemon::Engine engine(config());
    engine.start();
    auto s = engine.status();
    EXPECT_TRUE(s.paused);
    EXPECT_EQ(s.pause_reason, "test");
    engine.handle_control("resume", {}, admin);
    wait_finished(engine, 240s);
    EXPECT_EQ(engine.status().state, "done");
    auto ls = engine.handle_control("ls", {{"state", "deleted"}}, stranger);
    EXPECT_EQ(ls["clips"].size(), static_cast<size_t>(kClips));
    EXPECT_THROW(engine.handle_control("ls", {{"state", "bogus"}}, stranger), Error);
  }
}

// Epochs re-download the dataset (storage is the constraint) in a new order,
// and each trains every window exactly once.
TEST_F(Pipeline, SecondEpochTrainsEveryWindowOnceMoreInANewOrder) {
  Trace trace;
  {
    daemon::Engine engine(config("16MB", R"(, "epochs": 2)"), &trace);
    engine.start();
    wait_finished(engine, 300s);
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
  EXPECT_EQ(std::set(first.begin(), first.end()), std::set(second.begin(), second.end())) << "the same windows each epoch";
  EXPECT_NE(first, second) << "the plan shuffles per epoch";
  EXPECT_EQ(files_under(dir / "cache"), std::vector<std::string>{});
}

namespace {

// In a forked child: a private mount namespace (a user namespace too when not
// root) with a tmpfs of `size` at `dir`, so the test owns a filesystem it can
// fill. False when the machine allows neither.
bool mount_private_tmpfs(const fs::path& dir, const char* size) {
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  if (::unshare(CLONE_NEWNS) != 0) {
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return false;
    std::ofstream("/proc/self/setgroups") << "deny";
    std::ofstream("/proc/self/uid_map") << "0 " << uid << " 1";
    std::ofstream("/proc/self/gid_map") << "0 " << gid << " 1";
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return false;
  return ::mount("tmpfs", dir.c_str(), "tmpfs", 0, (std::string("size=") + size).c_str()) == 0;
}

uint64_t free_bytes(const fs::path& p) { return fs::space(p).available; }

}  // namespace

// The filesystem fills up below the budget (another program writes to it):
// work stops with a clear disk-full state, nothing is lost, and the run goes on
// by itself once space returns.
TEST_F(Pipeline, FullFilesystemWaitsAndLosesNothing) {
  Config c = config("16MB");  // free_disk_floor 10MB; starts kaio-hub before the fork
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (!mount_private_tmpfs(dir, "48m")) ::_exit(77);
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
      auto deadline = std::chrono::steady_clock::now() + 120s;
      while (engine.status().train.step < 4 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(50ms);
      check(engine.status().train.step >= 4, "training started");
      // Leave half the floor free: reservations must wait, the ledger can still write.
      uint64_t fill = free_bytes(dir) - c.storage.free_disk_floor / 2;
      {
        Fd filler(::open((dir / "filler").c_str(), O_CREAT | O_WRONLY, 0600));
        check(filler.get() >= 0 && ::posix_fallocate(filler.get(), 0, static_cast<off_t>(fill)) == 0, "filling the tmpfs");
      }
      deadline = std::chrono::steady_clock::now() + 60s;
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
      Pipeline::wait_finished(engine, 240s);
      auto st = engine.status();
      check(st.state == "done", "done after space returned, got " + st.state + " " + st.last_error);
      check(st.peak_reserved_bytes <= c.storage.budget, "budget held");
    }
    std::set<std::pair<std::string, int>> unique(trace.windows.begin(), trace.windows.end());
    check(unique.size() == trace.windows.size(), "no window repeated");
    check(trace.windows.size() == kClips * 2u, "no window lost: " + std::to_string(trace.windows.size()));
    check(files_under(dir / "cache").empty(), "nothing left behind");
    std::printf("disk full: state %s (%s); resumed when space returned; windows %zu, lost 0, repeated 0\n", seen_state.c_str(),
                seen_detail.c_str(), trace.windows.size());
    std::fflush(stdout);
    ::_exit(0);
  }
  int status = 0;
  auto deadline = std::chrono::steady_clock::now() + 500s;
  while (::waitpid(child, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      FAIL() << "the full-filesystem run did not end within 500 s";
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(WIFEXITED(status)) << "child died by signal " << WTERMSIG(status);
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "skipped: cannot mount a private tmpfs here (needs root or user namespaces)";
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
  wait_finished(engine, 240s);
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
