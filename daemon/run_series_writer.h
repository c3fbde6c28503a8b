#pragma once
// The run's time series (state/run_series.h) as kaiod writes it: a row at
// start (after recovery), one per durable checkpoint and one at a clean stop,
// each from the status of that moment; and on its own thread, which looks at
// the status every `poll`, one a minute and one as soon as the state goes
// into or out of paused or an outage (waiting-network, auth-required), so
// that the picture's spans start and end where they did. A ledger write that
// fails (a full disk) is logged once and skipped until one succeeds again:
// the picture gets a hole, the run goes on.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
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
                  std::chrono::milliseconds interval = std::chrono::minutes(1),
                  std::chrono::milliseconds poll = std::chrono::seconds(5));
  ~RunSeriesWriter();  // ends the minute thread without a stop row
  RunSeriesWriter(const RunSeriesWriter&) = delete;
  RunSeriesWriter& operator=(const RunSeriesWriter&) = delete;

  void start();       // the start row, then the thread
  void checkpoint();  // a durable checkpoint's row
  void stop();        // ends the minute thread, then the stop row; once, and only after start()

 private:
  // A row of `kind` from the status now, when `wanted` says so of it.
  void record(state::SampleKind kind, const std::function<bool(const ServiceStatus&)>& wanted = {});
  void watch();
  void end_thread();

  state::Ledger& ledger_;
  StatusSource status_;
  std::chrono::milliseconds interval_, poll_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool started_ = false, stopping_ = false, write_failing_ = false;
  std::string last_state_;  // of the last row written
  std::thread thread_;
};

}  // namespace kaio::daemon
