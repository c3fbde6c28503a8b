#pragma once
// Process-level harness: the real kaiod, kaioctl, kaio-hub and kaio-mkdata
// binaries as child processes on loopback, each in its own temp folder. Every
// child is killed and reaped when its object goes away; every wait is bounded.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/fs.h"
#include "tests/support/datasets.h"
#include "tests/support/disk_sampler.h"
#include "tests/support/hub.h"
#include "tests/support/process.h"
#include "tests/support/progress_watchdog.h"
#include "tests/support/sandbox.h"

namespace kaio::reliability {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using kaio::test::cached_dataset;
using kaio::test::CommandResult;
using kaio::test::DiskSampler;
using kaio::test::HubProcess;
using kaio::test::kaioctl_bin;
using kaio::test::kaiod_bin;
using kaio::test::ProgressSample;
using kaio::test::ProgressWatchdog;
using kaio::test::run_command;
using kaio::test::Sandbox;
using kaio::test::shell_quote;
using kaio::test::tool;
using nlohmann::json;

// KAIO_SOAK=1 selects the long forms; each figure can also be set on its own.
inline bool soak() {
  const char* v = std::getenv("KAIO_SOAK");
  return v && *v && std::string(v) != "0";
}
inline int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::stoll(v) : fallback;
}

inline std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A child process with stdout and stderr appended to a log file. It may carry
// a watchdog (start_kaiod gives every kaiod one) that kills it when it trips.
class Child {
 public:
  Child() = default;
  Child(const std::vector<std::string>& args, const fs::path& log, const std::map<std::string, std::string>& env = {},
        const std::vector<std::string>& unset = {}) {
    start(args, log, env, unset);
  }
  ~Child() { kill_and_reap(); }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  void start(const std::vector<std::string>& args, const fs::path& log,
             const std::map<std::string, std::string>& env = {}, const std::vector<std::string>& unset = {}) {
    kill_and_reap();
    std::lock_guard lock(mutex_);
    exit_status_.reset();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      for (const auto& name : unset) ::unsetenv(name.c_str());
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      std::vector<char*> argv;
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  pid_t pid() const { return pid_; }
  bool running() {
    std::lock_guard lock(mutex_);
    poll();
    return pid_ > 0 && !exit_status_;
  }
  // Safe from another thread (a watchdog): never signals a pid already reaped.
  void signal(int sig) {
    std::lock_guard lock(mutex_);
    poll();
    if (pid_ > 0 && !exit_status_) ::kill(pid_, sig);
  }
  // A watchdog for this run; dropped when the child is killed or restarted.
  void watch(std::unique_ptr<ProgressWatchdog> w) { watchdog_ = std::move(w); }
  bool watchdog_tripped() const { return watchdog_ && watchdog_->tripped(); }
  // Waits up to `limit` for the child to exit; the raw wait status, or nullopt.
  std::optional<int> wait_for(std::chrono::milliseconds limit) {
    auto deadline = Clock::now() + limit;
    while (running() && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
    return exit_status_;
  }
  // Exit code, or 128+signal; -1 while running.
  int exit_code() {
    std::lock_guard lock(mutex_);
    poll();
    if (!exit_status_) return -1;
    return WIFEXITED(*exit_status_) ? WEXITSTATUS(*exit_status_) : 128 + WTERMSIG(*exit_status_);
  }
  void kill_and_reap() {
    {
      std::lock_guard lock(mutex_);
      if (pid_ > 0 && !exit_status_) {
        ::kill(pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        exit_status_ = status;
      }
    }
    watchdog_.reset();  // after the kill: a status request in flight then ends at once
  }

 private:
  void poll() {
    if (pid_ <= 0 || exit_status_) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) exit_status_ = status;
  }
  std::mutex mutex_;  // poll/kill against a watchdog thread's signal
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::unique_ptr<ProgressWatchdog> watchdog_;
};

// A dataset from kaio-mkdata (tests/support/datasets.h: made once per build
// folder), then copied as a repo.
struct DatasetSpec {
  int clips = 24;
  int clips_per_archive = 6;
  double seconds = 4;
  int width = 320, height = 180;
  int fps = 30;
  uint64_t target_bytes = 0;  // > 0: kaio-mkdata --target-bytes instead of --clips
  int seed = 7;
};

inline fs::path dataset(const DatasetSpec& spec) {
  return cached_dataset("--seed " + std::to_string(spec.seed) + " --clips-per-archive " +
                        std::to_string(spec.clips_per_archive) + " --seconds " + std::to_string(spec.seconds) +
                        " --width " + std::to_string(spec.width) + " --height " + std::to_string(spec.height) +
                        " --fps " + std::to_string(spec.fps) +
                        (spec.target_bytes ? " --target-bytes " + std::to_string(spec.target_bytes)
                                           : " --clips " + std::to_string(spec.clips)));
}

// Files of a dataset repo (no dot files), and their total size.
inline uint64_t repo_bytes(const fs::path& repo) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(repo))
    if (e.is_regular_file() && e.path().filename().string()[0] != '.') n += e.file_size();
  return n;
}

// One kaiod run's folders and config.
struct DaemonSetup {
  fs::path dir;  // the test's folder; cache/ and state/ are what the budget covers
  std::string endpoint, repo = "kaio-test/llava";
  std::string budget = "16MB";
  json source_extra = json::object(), storage = json::object(), fetch = json::object(), decode = json::object(),
       train = json::object();
  fs::path cache() const { return dir / "cache"; }
  fs::path state() const { return dir / "state"; }
  fs::path socket() const { return dir / "kaiod.sock"; }
  fs::path config_file() const { return dir / "kaiod.json"; }
  fs::path log() const { return dir / "kaiod.log"; }
  fs::path trace() const { return dir / "trace.txt"; }
  fs::path db() const { return state() / "kaio.db"; }

  void write_config() const {
    json c;
    c["source"] = {{"endpoint", endpoint}, {"repo", repo}, {"include", {"**/*.tar.gz"}}};
    c["source"].update(source_extra);
    c["storage"] = {{"cache_dir", cache().string()},
                    {"state_dir", state().string()},
                    {"budget", budget},
                    {"free_disk_floor", "10MB"}};
    c["storage"].update(storage);
    c["fetch"] = {{"max_backoff", "2s"}, {"stall_timeout", "5s"}, {"connect_timeout", "5s"}};
    c["fetch"].update(fetch);
    c["decode"] = {{"frames", 8}, {"stride", 8}, {"fps", 4}, {"size", 32}, {"workers", 2}};
    c["decode"].update(decode);
    c["train"] = {{"backend", "cpu"},      {"model", "tiny"},    {"batch_size", 4},
                  {"checkpoint_every", 4}, {"shuffle_clips", 4}, {"lr", 0.001},
                  {"warmup_steps", 2},     {"threads", 1},       {"seed", 3}};
    c["train"].update(train);
    c["control"] = {{"socket", socket().string()}};
    // debug: the per-clip lines ("clip ... of FILE): N windows") are progress
    // events the crash test draws kill points from and counts clips by.
    c["log"] = {{"level", "debug"}};
    std::ofstream(config_file()) << c.dump(2);
  }
};

// 12 clips in 2 archives: runs that only need to start and finish.
inline DatasetSpec small_spec() {
  DatasetSpec spec;
  spec.clips = 12;
  spec.clips_per_archive = 6;
  return spec;
}

// 36 clips of 640x360 in 6 archives: with a throttle or an outage, a run long
// enough to be stopped or cut off mid-way.
inline DatasetSpec long_spec() {
  DatasetSpec spec;
  spec.clips = 36;
  spec.width = 640;
  spec.height = 360;
  return spec;
}

// A test's folder (kept when the test failed): kaio-hub serving `spec` as
// kaio-test/llava, and the setup of a kaiod pointed at it (run/).
struct HubRun {
  Sandbox dir;
  DatasetSpec spec;
  std::unique_ptr<HubProcess> hub;
  DaemonSetup s;
  HubRun(const std::string& tag, std::vector<std::string> hub_args, DatasetSpec data)
      : dir("rel-" + tag, Sandbox::keep_on_failure), spec(data) {
    fs::create_directories(dir / "repos/kaio-test");
    fs::create_directory_symlink(dataset(spec), dir / "repos/kaio-test/llava");
    hub = std::make_unique<HubProcess>(dir / "repos", hub_args, dir / "hub.log");
    s.dir = dir / "run";
    fs::create_directories(s.dir);
    s.endpoint = hub->url();
  }
};

// `kaioctl status --json`'s object, asked over the control socket in-process
// (no child process: the watchdog asks every second).
inline std::optional<json> status_direct(const fs::path& socket) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string reply;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    std::string request = "{\"v\":1,\"cmd\":\"status\",\"args\":{}}\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
        reply.append(buf, static_cast<size_t>(n));
        if (reply.find('\n') != std::string::npos) break;
      }
    }
  }
  ::close(fd);
  auto j = json::parse(reply, nullptr, false);
  if (j.is_discarded() || !j.value("ok", false) || !j.contains("result")) return std::nullopt;
  return j["result"];
}

// The watchdog every kaiod run carries: fails the test and kills kaiod when
// its status stays in budget-wait with nothing moving (see progress_watchdog.h).
inline void watch_kaiod(Child& child, const fs::path& socket) {
  child.watch(std::make_unique<ProgressWatchdog>(
      [socket]() -> std::optional<ProgressSample> {
        auto st = status_direct(socket);
        if (!st) return std::nullopt;
        return kaio::test::progress_of(*st);
      },
      [&child] { child.signal(SIGKILL); }));
}

// kaiod with its log; the trace is on when `trace` is set. It carries a
// no-progress watchdog (watch_kaiod).
inline void start_kaiod(Child& child, const DaemonSetup& s, bool trace = true,
                        std::map<std::string, std::string> env = {},
                        std::vector<std::string> unset = {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "HF_TOKEN",
                                                          "HF_ENDPOINT", "HF_TOKEN_PATH", "JOURNAL_STREAM"}) {
  if (trace) env["KAIO_WINDOW_TRACE"] = s.trace().string();
  if (!env.count("HOME")) env["HOME"] = s.dir.string();  // no ~/.cache/huggingface/token of the machine
  child.start({kaiod_bin().string(), "--config", s.config_file().string()}, s.log(), env, unset);
  watch_kaiod(child, s.socket());
}

inline CommandResult kaioctl(const DaemonSetup& s, const std::string& args, int timeout_s = 20) {
  return run_command(shell_quote(kaioctl_bin().string()) + " --socket " + shell_quote(s.socket().string()) + " " + args,
                     timeout_s);
}

inline std::optional<json> status(const DaemonSetup& s) {
  auto r = kaioctl(s, "status --json");
  if (r.exit_code != 0) return std::nullopt;
  auto j = json::parse(r.output, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  return j;
}

// How the ledger is read with the sqlite3 shell: `live` opens kaio.db
// read-only; `copy` reads a copy of kaio.db and its -wal (no -shm), for use
// between lives: after a SIGKILL a -readonly connection can fail on a WAL it
// may not recover ("attempt to write a readonly database"); the copy is
// recovered instead, and the ledger kaiod restarts on stays as it was left.
enum class LedgerRead { live, copy };

inline std::string sql(const fs::path& db, const std::string& query, LedgerRead how = LedgerRead::live) {
  if (!fs::exists(db)) return "";
  std::optional<Sandbox> copy;
  std::string cmd = "sqlite3 -readonly " + shell_quote(db.string());
  if (how == LedgerRead::copy) {
    copy.emplace("ledger");
    fs::copy_file(db, *copy / db.filename());
    std::error_code ec;
    fs::path wal = db.string() + "-wal";
    if (fs::exists(wal, ec)) fs::copy_file(wal, *copy / wal.filename(), ec);
    cmd = "sqlite3 " + shell_quote((*copy / db.filename()).string());
  }
  auto r = run_command(cmd + " " + shell_quote(query), 30);
  std::string out = r.output;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}
inline int64_t last_durable_checkpoint(const fs::path& db, LedgerRead how = LedgerRead::live) {
  std::string s = sql(db, "select coalesce(max(step), 0) from checkpoints", how);
  if (s.find("no such table: checkpoints") != std::string::npos) return 0;  // killed before its schema was made
  try {
    return s.empty() ? 0 : std::stoll(s);
  } catch (...) {
    ADD_FAILURE() << "ledger query failed: " << s;
    return 0;
  }
}

// The trace: "epoch step clip window loss" lines.
struct TraceLine {
  int epoch = 0;
  int64_t step = 0;
  std::string clip;
  int window = 0;
  std::string loss;
  bool operator==(const TraceLine&) const = default;
};
inline std::vector<TraceLine> read_trace(const fs::path& file) {
  std::vector<TraceLine> lines;
  std::ifstream in(file);
  std::string text;
  while (std::getline(in, text)) {
    std::istringstream ss(text);
    TraceLine l;
    if (ss >> l.epoch >> l.step >> l.clip >> l.window >> l.loss) lines.push_back(l);
  }
  return lines;
}
// Keeps the steps a durable checkpoint covers; returns the lines dropped.
inline size_t truncate_trace(const fs::path& file, int64_t checkpoint_step) {
  auto lines = read_trace(file);
  std::string kept;
  size_t dropped = 0;
  for (const auto& l : lines) {
    if (l.step > checkpoint_step) {
      ++dropped;
      continue;
    }
    kept += std::to_string(l.epoch) + " " + std::to_string(l.step) + " " + l.clip + " " + std::to_string(l.window) +
            " " + l.loss + "\n";
  }
  std::ofstream(file, std::ios::trunc) << kept;
  return dropped;
}

inline size_t count_files(const fs::path& dir) {
  size_t n = 0;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() || e.is_symlink()) ++n;
  return n;
}

inline std::string tail(const std::string& text, size_t n = 3000) {
  return text.size() > n ? text.substr(text.size() - n) : text;
}

// Counts the lines appended to a file, reading only what is new at each poll
// (kill points in the crash test are drawn from these events).
class LineCounter {
 public:
  explicit LineCounter(fs::path file) : file_(std::move(file)) {
    std::error_code ec;
    auto size = fs::file_size(file_, ec);
    offset_ = ec ? 0 : size;  // lines already there are not counted
  }
  // The lines appended since construction (a partial last line is not counted yet).
  size_t poll() {
    std::ifstream in(file_, std::ios::binary);
    if (!in) return lines_;
    in.seekg(static_cast<std::streamoff>(offset_));
    char buf[65536];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      auto n = static_cast<size_t>(in.gcount());
      offset_ += n;
      for (size_t i = 0; i < n; ++i) {
        if (buf[i] == '\n') {
          ++lines_;
          last_line_ = partial_;
          partial_.clear();
        } else if (partial_.size() < 4096) {
          partial_ += buf[i];
        }
      }
    }
    return lines_;
  }
  size_t lines() const { return lines_; }
  const std::string& last_line() const { return last_line_; }

 private:
  fs::path file_;
  uint64_t offset_ = 0;
  size_t lines_ = 0;
  std::string partial_, last_line_;
};

inline size_t count_lines(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

// Waits for `done` to hold, checking every `every`; false at the deadline.
template <class F>
bool wait_until(F done, std::chrono::milliseconds limit, std::chrono::milliseconds every = 100ms) {
  auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(every);
  }
  return done();
}

}  // namespace kaio::reliability
