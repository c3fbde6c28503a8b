#pragma once
// The run's time series (state/run_series.h) as kaiod writes it: a row at
// start (after recovery), one a minute on its own thread, one per durable
// checkpoint and one at a clean stop, each from the status of that moment.
// A ledger write that fails (a full disk) is logged once and skipped until
// one succeeds again: the picture gets a hole, the run goes on.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "daemon/status.h"
#include "state/ledger.h"

namespace kaio::daemon {

// The row for `s` at unix time `t`; loss stays empty before this kaiod's first step.
state::RunSample to_run_sample(const ServiceStatus& s, state::SampleKind kind, int64_t t);

class RunSeriesWriter {
 public:
  using StatusSource = std::function<ServiceStatus()>;
  RunSeriesWriter(state::Ledger& ledger, StatusSource status,
                  std::chrono::milliseconds interval = std::chrono::minutes(1));
  ~RunSeriesWriter();  // ends the minute thread without a stop row
  RunSeriesWriter(const RunSeriesWriter&) = delete;
  RunSeriesWriter& operator=(const RunSeriesWriter&) = delete;

  void start();       // the start row, then a row every `interval`
  void checkpoint();  // a durable checkpoint's row
  void stop();        // ends the minute thread, then the stop row; once, and only after start()

 private:
  void record(state::SampleKind kind);
  void every_interval();
  void end_thread();

  state::Ledger& ledger_;
  StatusSource status_;
  std::chrono::milliseconds interval_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool started_ = false, stopping_ = false, write_failing_ = false;
  std::thread thread_;
};

}  // namespace kaio::daemon
