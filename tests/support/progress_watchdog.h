#pragma once
// Test helper: a watchdog that fails a run whose status stays in budget-wait
// with nothing moving. It is progress-based, not a time limit on the run: it
// notes the last moment any progress figure changed (train step and samples,
// files done/failed/active, clips, disk and reserved bytes, checkpoint step,
// download bytes where the test can see them) and trips only after `limit`
// (120 s; KAIO_WATCHDOG_S) in which every answered poll showed budget-wait
// and no figure changed. A slow or loaded machine makes progress slowly, not
// never, so the verdict does not depend on its speed.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace kaio::test {

inline std::chrono::seconds watchdog_limit() {
  const char* v = std::getenv("KAIO_WATCHDOG_S");
  return std::chrono::seconds(v && *v ? std::stoll(v) : 120);
}

// One poll: the state, the progress figures, and what to print when it trips.
struct ProgressSample {
  std::string state;
  std::vector<int64_t> figures;
  std::string dump;
};

// The status fields that count as progress, from a `kaioctl status --json` object.
inline ProgressSample progress_of(const nlohmann::json& st) {
  ProgressSample s;
  s.state = st.value("state", std::string("?"));
  auto num = [](const nlohmann::json& j, const char* key) -> int64_t {
    if (!j.is_object() || !j.contains(key)) return -1;
    const auto& v = j[key];
    return v.is_number_integer() ? v.get<int64_t>() : v.is_number() ? static_cast<int64_t>(v.get<double>()) : -1;
  };
  const auto empty = nlohmann::json::object();
  const auto& t = st.contains("train") ? st["train"] : empty;
  const auto& f = st.contains("files") ? st["files"] : empty;
  const auto& c = st.contains("clips") ? st["clips"] : empty;
  s.figures = {num(t, "epoch"),          num(t, "step"),   num(t, "samples"), num(t, "checkpoint_step"),
               num(f, "done"),           num(f, "failed"), num(f, "active"),  num(c, "ready"),
               num(c, "consumed"),       num(c, "failed"), num(c, "deleted"), num(st, "disk_bytes"),
               num(st, "reserved_bytes")};
  s.dump = st.dump();
  return s;
}

// Tracks polls; trips once budget-wait has lasted `limit` with no figure changing.
class NoProgressTracker {
 public:
  using Clock = std::chrono::steady_clock;
  explicit NoProgressTracker(std::chrono::seconds limit = watchdog_limit()) : limit_(limit) {}
  // True when this poll trips the watchdog (once).
  bool feed(const ProgressSample& s, Clock::time_point now = Clock::now()) {
    if (tripped_) return false;
    bool moved = !last_ || last_->figures != s.figures;
    if (s.state != "budget-wait")
      stuck_since_.reset();
    else if (moved || !stuck_since_)
      stuck_since_ = now;  // in budget-wait; nothing has moved since now
    last_ = s;
    if (stuck_since_ && now - *stuck_since_ >= limit_) {
      tripped_ = true;
      return true;
    }
    return false;
  }
  bool tripped() const { return tripped_; }
  std::string message() const {
    return "watchdog: status stayed in budget-wait with nothing moving (train step, samples, files, clips, disk and "
           "download bytes) for " +
           std::to_string(limit_.count()) + " s; last status: " + (last_ ? last_->dump : std::string("(none)"));
  }

 private:
  std::chrono::seconds limit_;
  std::optional<ProgressSample> last_;
  std::optional<Clock::time_point> stuck_since_;
  bool tripped_ = false;
};

// A thread polling `poll` every second; on a trip it records a test failure
// (and prints it, for forked children whose failures gtest does not see),
// then calls `on_trip` (e.g. kill the stuck kaiod so the test's wait ends).
class ProgressWatchdog {
 public:
  ProgressWatchdog(std::function<std::optional<ProgressSample>()> poll, std::function<void()> on_trip = {},
                   std::chrono::seconds limit = watchdog_limit())
      : poll_(std::move(poll)), on_trip_(std::move(on_trip)), tracker_(limit) {
    thread_ = std::thread([this] { loop(); });
  }
  ~ProgressWatchdog() { stop(); }
  ProgressWatchdog(const ProgressWatchdog&) = delete;
  ProgressWatchdog& operator=(const ProgressWatchdog&) = delete;
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  bool tripped() const { return tripped_; }
  std::string message() const {
    std::lock_guard lock(mutex_);
    return message_;
  }

 private:
  void loop() {
    std::unique_lock lock(mutex_);
    while (!stop_) {
      lock.unlock();
      auto s = poll_();
      lock.lock();
      if (stop_) break;
      if (s && tracker_.feed(*s)) {
        message_ = tracker_.message();
        tripped_ = true;
        std::fprintf(stderr, "%s\n", message_.c_str());
        std::fflush(stderr);
        ADD_FAILURE() << message_;
        lock.unlock();
        if (on_trip_) on_trip_();
        return;
      }
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; });
    }
  }

  std::function<std::optional<ProgressSample>()> poll_;
  std::function<void()> on_trip_;
  NoProgressTracker tracker_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<bool> tripped_{false};
  std::string message_;
  std::thread thread_;
};

}  // namespace kaio::test
