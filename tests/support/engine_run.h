#pragma once
// Test helpers for whole-engine runs: a kaio-mkdata dataset served by
// kaio-hub, a config for it, the window trace, bounded waits with a
// budget-wait watchdog, engine lives in forked children that a test kills at
// progress points, and the replay of their trace.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/config.h"
#include "common/error.h"
#include "daemon/engine.h"
#include "tests/support/datasets.h"
#include "tests/support/hub.h"
#include "tests/support/sandbox.h"
#include "tests/support/trace_file.h"

namespace kaio::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Window = std::pair<std::string, int>;

// A dataset made by kaio-mkdata and served by kaio-hub, for one test.
struct Served {
  std::unique_ptr<HubProcess> hub;
  uint64_t archive_bytes = 0;
};

inline Served serve(const fs::path& dir, const std::string& mkdata_args,
                    const std::function<void(const fs::path&)>& mangle = {}) {
  fs::path repo = dir / "hub" / "kaio-test" / "data";
  copy_dataset(mkdata_args, repo);
  if (mangle) mangle(repo);
  Served s;
  for (const auto& e : fs::recursive_directory_iterator(repo))
    if (e.is_regular_file() && e.path().extension() == ".gz") s.archive_bytes += e.file_size();
  s.hub = std::make_unique<HubProcess>(dir / "hub");
  EXPECT_TRUE(s.hub->ok()) << "kaio-hub did not start";
  return s;
}

inline Config config_for(const fs::path& dir, const Served& served, const std::string& budget,
                         const std::string& train = "", const std::string& storage = R"("free_disk_floor": "10MB")") {
  std::string json =
      R"({"source": {"endpoint": ")" + served.hub->url() +
      R"(", "repo": "kaio-test/data", "include": ["**/*.tar.gz"], "captions": ["**/*_cap_processed.json"]},
      "storage": {"cache_dir": ")" +
      (dir / "cache").string() + R"(", "state_dir": ")" + (dir / "state").string() + R"(", "budget": ")" + budget +
      R"(", )" + storage + R"(},
      "decode": {"frames": 8, "stride": 8, "fps": 4, "size": 32, "workers": 2},
      "train": {"backend": "cpu", "model": "tiny", "batch_size": 4, "checkpoint_every": 4, "shuffle_clips": 4,
                "lr": 0.001, "warmup_steps": 2, "threads": 1, "seed": 3)" +
      train + R"(},
      "control": {"socket": ")" +
      (dir / "kaiod.sock").string() + R"("}})";
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
inline daemon::ServiceStatus run_to_end(daemon::Engine& engine, std::chrono::seconds limit = 600s,
                                        std::chrono::seconds stuck = 120s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  auto moved = std::chrono::steady_clock::now();
  std::string last;
  while (!engine.finished() && std::chrono::steady_clock::now() < deadline) {
    auto s = engine.status();
    std::string progress = std::to_string(s.train.step) + " " + std::to_string(s.files.done) + " " +
                           std::to_string(s.clips.ready) + " " + std::to_string(s.reserved_bytes) + " " +
                           std::to_string(s.disk_bytes);
    if (progress != last || s.state != "budget-wait") {
      last = progress;
      moved = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - moved > stuck) {
      std::printf("watchdog: budget-wait with nothing moving for %lld s: %s; reserved %llu of %llu, disk %llu\n",
                  static_cast<long long>(stuck.count()), s.state_detail.c_str(),
                  static_cast<unsigned long long>(s.reserved_bytes), static_cast<unsigned long long>(s.budget_bytes),
                  static_cast<unsigned long long>(s.disk_bytes));
      return s;
    }
    std::this_thread::sleep_for(50ms);
  }
  return engine.status();
}

// Files of `dir` that this process still holds mapped or open after they
// were unlinked: space `du` cannot see but the disk still holds.
inline int deleted_but_held(const fs::path& dir) {
  std::set<std::string> held;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.find(dir.string()) != std::string::npos && line.find("(deleted)") != std::string::npos)
      held.insert(line.substr(line.find('/')));
  std::error_code ec;
  for (const auto& fd : fs::directory_iterator("/proc/self/fd", ec)) {
    auto target = fs::read_symlink(fd.path(), ec).string();
    if (!ec && target.find(dir.string()) != std::string::npos && target.find("(deleted)") != std::string::npos)
      held.insert(target);
  }
  return static_cast<int>(held.size());
}

inline std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec))
    if (e.is_regular_file()) found.push_back(fs::relative(e.path(), dir).string());
  return found;
}

// One life of the engine in a forked child that appends its trace to `file`:
// "w <epoch> <step> <clip> <window>" per window, then "loss <step> <loss>".
// At the steps in `pause_at` another thread of the child pauses and resumes.
inline pid_t start_life(const Config& c, const fs::path& file, std::set<int64_t> pause_at) {
  pid_t child = ::fork();
  if (child != 0) return child;
  TraceFile trace(file);
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

// How a life of start_life() ended.
enum class LifeEnd { killed, exited, hung };

// Waits for the life `child` to end by itself, or kills it with SIGKILL once
// its trace at `file` has recorded the first step in `kill_at` (which is then
// taken out). A life that makes no end within `bound` is killed and `hung`.
// `status` is waitpid's for an exited life.
inline LifeEnd await_life(pid_t child, const fs::path& file, std::set<int64_t>& kill_at, int& status,
                          std::chrono::seconds bound = 600s);

// The highest step the trace file has recorded a loss for.
inline int64_t last_step(const fs::path& file) {
  std::ifstream in(file);
  int64_t best = 0;
  for (std::string line; std::getline(in, line);)
    if (line.rfind("loss ", 0) == 0) best = std::max<int64_t>(best, std::stoll(line.substr(5)));
  return best;
}

inline LifeEnd await_life(pid_t child, const fs::path& file, std::set<int64_t>& kill_at, int& status,
                          std::chrono::seconds bound) {
  auto deadline = std::chrono::steady_clock::now() + bound;
  while (::waitpid(child, &status, WNOHANG) == 0) {
    bool hung = std::chrono::steady_clock::now() > deadline;
    if (hung || (!kill_at.empty() && last_step(file) >= *kill_at.begin())) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      if (hung) return LifeEnd::hung;
      kill_at.erase(kill_at.begin());
      return LifeEnd::killed;
    }
    std::this_thread::sleep_for(5ms);
  }
  return LifeEnd::exited;
}

struct Replayed {
  std::vector<Window> windows;  // the last word on each step, in step order
  std::map<int64_t, double> losses;
};

// Steps after the last checkpoint are trained again after a kill: the last
// word on each step counts.
inline Replayed replay(const fs::path& file) {
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
inline void truncate_one_archive(const fs::path& repo) {
  std::vector<fs::path> archives;
  for (const auto& e : fs::recursive_directory_iterator(repo))
    if (e.path().extension() == ".gz") archives.push_back(e.path());
  std::sort(archives.begin(), archives.end());
  ASSERT_GE(archives.size(), 3u);
  fs::resize_file(archives[1], fs::file_size(archives[1]) * 6 / 10);
}

// The smallest budget kaiod accepts for `c`, to 64 KB: the start-up check
// refuses what it cannot finish under.
inline uint64_t smallest_accepted(Config c) {
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

}  // namespace kaio::test
