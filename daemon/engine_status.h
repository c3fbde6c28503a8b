#pragma once
// Status as a pure function: status_inputs() copies what status needs out of
// the core (under its lock) and the network stages; derive_status() turns
// those inputs into the ServiceStatus value, touching nothing else, so the
// state machine (error, starting, done, paused, disk-full, auth-required,
// waiting-network, budget-wait, running) reads in one place.
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "cache/budget.h"
#include "cache/plan.h"
#include "daemon/engine_core.h"
#include "daemon/status.h"
#include "fetch/hub.h"

namespace kaio::daemon {

struct StatusInputs {
  std::string repo, revision;
  bool paused = false, done = false, failed = false;
  std::string pause_reason, last_error, disk_full_reason;
  std::string starting;  // EngineCore::starting
  std::string endpoint;
  uint64_t budget_bytes = 0, disk_bytes = 0, free_disk_floor = 0;
  std::string cache_dir;
  cache::BudgetStatus budget;
  fetch::NetworkStatus network;  // the downloader's, or the Hub client's when that one is not ok
  uint64_t download_bytes_total = 0;
  int64_t files_total = 0;
  std::map<state::FileState, int64_t> file_counts;  // of the current epoch
  std::map<state::ClipState, int64_t> clip_counts;
  ServiceStatus::Train train;
  ServiceStatus::Job job;
  ServiceStatus::Rates rates;  // as measured, also while paused
  std::optional<cache::WindowSequence::Progress> progress;
  std::map<std::string, uint64_t> errors_total;
  nlohmann::json consumers;          // train.backend "external" only
  std::string consumer_wait_reason;  // the budget waits for this consumer's commit
};

// Samples the rate counters as it reads them.
StatusInputs status_inputs(EngineCore& core);
ServiceStatus derive_status(const StatusInputs& in);

}  // namespace kaio::daemon
