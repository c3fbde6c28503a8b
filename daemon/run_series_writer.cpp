// RunSeriesWriter (run_series_writer.h): the rows of the run's time series.
#include "daemon/run_series_writer.h"

#include <spdlog/spdlog.h>

#include <ctime>

#include "common/error.h"

namespace kaio::daemon {

state::RunSample to_run_sample(const ServiceStatus& s, state::SampleKind kind, int64_t t) {
  state::RunSample r;
  r.t = t;
  r.kind = kind;
  r.state = s.state;
  r.epoch = s.train.epoch;
  r.step = s.train.step;
  r.disk_bytes = s.disk_bytes;
  r.reserved_bytes = s.reserved_bytes;
  r.budget_bytes = s.budget_bytes;
  r.download_bytes_per_s = s.rates.download_bps;
  r.decode_clips_per_s = s.rates.decode_clips_per_s;
  r.train_samples_per_s = s.rates.train_samples_per_s;
  // The loss is 0 until this kaiod's first step (also after a restart at step N).
  if (s.train.loss > 0 || s.train.loss_avg > 0) {
    r.loss = s.train.loss;
    r.loss_avg = s.train.loss_avg;
  }
  r.data_wait = s.train.wait_fraction;
  return r;
}

namespace {

// The states the picture shades as spans (kaioctl report).
bool marked(const std::string& state) {
  return state == "paused" || state == "waiting-network" || state == "auth-required";
}

}  // namespace

RunSeriesWriter::RunSeriesWriter(state::Ledger& ledger, StatusSource status, std::chrono::milliseconds interval,
                                 std::chrono::milliseconds poll)
    : ledger_(ledger), status_(std::move(status)), interval_(interval), poll_(poll) {}

RunSeriesWriter::~RunSeriesWriter() {
  end_thread();
}

void RunSeriesWriter::start() {
  {
    std::lock_guard lock(mutex_);
    if (started_) return;
    started_ = true;
  }
  record(state::SampleKind::start);
  thread_ = std::thread([this] { watch(); });
}

void RunSeriesWriter::checkpoint() {
  record(state::SampleKind::checkpoint);
}

void RunSeriesWriter::stop() {
  {
    std::lock_guard lock(mutex_);
    if (!started_ || stopping_) return;
  }
  end_thread();
  record(state::SampleKind::stop);
}

void RunSeriesWriter::end_thread() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void RunSeriesWriter::watch() {
  auto last_minute = std::chrono::steady_clock::now();
  std::unique_lock lock(mutex_);
  while (!wake_.wait_for(lock, poll_, [this] { return stopping_; })) {
    lock.unlock();
    if (std::chrono::steady_clock::now() - last_minute >= interval_) {
      last_minute = std::chrono::steady_clock::now();
      record(state::SampleKind::minute);
    } else {
      record(state::SampleKind::state, [this](const ServiceStatus& s) {
        std::lock_guard state_lock(mutex_);
        return marked(s.state) != marked(last_state_);
      });
    }
    lock.lock();
  }
}

void RunSeriesWriter::record(state::SampleKind kind, const std::function<bool(const ServiceStatus&)>& wanted) {
  try {
    auto status = status_();
    if (wanted && !wanted(status)) return;
    ledger_.append_run_sample(to_run_sample(status, kind, static_cast<int64_t>(::time(nullptr))));
    std::lock_guard lock(mutex_);
    if (write_failing_) spdlog::info("run series: rows written again");
    write_failing_ = false;
    last_state_ = status.state;
  } catch (const std::exception& err) {
    std::lock_guard lock(mutex_);
    if (!write_failing_)
      spdlog::warn("run series: {} row not written, skipped until a write succeeds: {}", to_string(kind), err.what());
    write_failing_ = true;
  }
}

}  // namespace kaio::daemon
