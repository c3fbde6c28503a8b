// Status (engine_status.h): the inputs copied under the core's lock, and
// the pure function from them to ServiceStatus. Owns no state.
#include "daemon/engine_status.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <optional>

#include "common/units.h"

namespace kaio::daemon {
namespace {

// The epoch's windows: those of the clips added so far, and as many again per
// file not yet decoded as the average file so far gave. Unknown before any
// file is decoded.
struct EpochWindows {
  double total = 0, left = 0;
};
std::optional<EpochWindows> epoch_windows(const StatusInputs& in) {
  if (!in.progress || in.progress->files_complete == 0) return std::nullopt;
  const auto& p = *in.progress;
  int64_t files_left = std::max<int64_t>(0, in.files_total - p.files_complete);
  double per_file = static_cast<double>(p.windows_added) / static_cast<double>(p.files_complete);
  double not_added = per_file * static_cast<double>(files_left);
  return EpochWindows{static_cast<double>(p.windows_added) + not_added,
                      static_cast<double>(p.windows_left) + not_added};
}

// Windows left in the epoch over the recent training rate; -1 while nothing
// is known or nothing trains.
double epoch_eta_seconds(const StatusInputs& in, double windows_per_second) {
  if (in.done) return 0;
  auto windows = epoch_windows(in);
  if (windows_per_second <= 0 || !windows) return -1;
  return windows->left / windows_per_second;
}

// The share of the epoch's windows trained, 0 to 100; -1 while unknown. Known
// while paused too: it needs no rate.
double epoch_percent(const StatusInputs& in) {
  if (in.done) return 100;
  auto windows = epoch_windows(in);
  if (!windows || windows->total <= 0) return -1;
  return std::clamp(100 * (windows->total - windows->left) / windows->total, 0.0, 100.0);
}

int64_t count(const auto& counts, auto key) {
  auto it = counts.find(key);
  return it == counts.end() ? 0 : it->second;
}

std::string next_try(const fetch::NetworkStatus& net) {
  auto t = std::chrono::system_clock::to_time_t(net.next_retry);
  char when[32];
  std::strftime(when, sizeof when, "%H:%M:%S", std::localtime(&t));
  return when;
}

// A rank ready to step while others are not waits for them at the
// all-reduce: "waiting at the all-reduce for rank 1 (waiting-network)". A rank
// whose own batch is not ready either still names the others, since the job
// waits for them too.
std::string job_wait_detail(const ServiceStatus::Job& job) {
  auto own = job.waiting_for.find(job.rank);
  std::string others;
  for (const auto& [rank, reason] : job.waiting_for)
    if (rank != job.rank)
      others += (others.empty() ? "" : ", ") + ("rank " + std::to_string(rank)) + " (" + reason + ")";
  if (others.empty()) return "";
  if (own == job.waiting_for.end()) return "waiting at the all-reduce for " + others;
  return "own batch not ready (" + own->second + "); the all-reduce waits for " + others + " as well";
}

// The state and its detail, the most pressing first.
void derive_state(const StatusInputs& in, ServiceStatus& s) {
  const auto& b = in.budget;
  const auto& net = in.network;
  bool net_waits = net.state == fetch::NetworkStatus::State::waiting_network;
  if (in.failed) {
    s.state = "error";
    s.state_detail = in.last_error;
  } else if (!in.starting.empty() && net_waits) {
    s.state = "waiting-network";
    s.state_detail = in.starting + ": " + net.reason + ", next try at " + next_try(net) + "; check source.endpoint (" +
                     in.endpoint + ") and the network";
  } else if (!in.starting.empty()) {
    s.state = "starting";
    s.state_detail = in.starting;
  } else if (in.done) {
    s.state = "done";
  } else if (in.paused) {
    s.state = "paused";
  } else if (!in.disk_full_reason.empty()) {
    s.state = "disk-full";
    s.state_detail = in.disk_full_reason;
  } else if (net.state == fetch::NetworkStatus::State::auth_required) {
    s.state = "auth-required";
    s.state_detail = net.reason;
  } else if (net_waits) {
    s.state = "waiting-network";
    s.state_detail = net.reason + ", next try at " + next_try(net);
  } else if (b.waiting > 0 && b.floor_reached) {
    s.state = "disk-full";
    s.state_detail = "less than storage.free_disk_floor (" + format_size(in.free_disk_floor) + ") free on " +
                     in.cache_dir + "; " + b.oldest_waiting_what + " (" + format_size(b.oldest_waiting_bytes) +
                     ") waits";
  } else if (b.waiting > 0) {
    s.state = "budget-wait";
    s.state_detail = in.consumer_wait_reason.empty()
                         ? b.oldest_waiting_what + " (" + format_size(b.oldest_waiting_bytes) + ")"
                         : in.consumer_wait_reason + "; " + b.oldest_waiting_what + " (" +
                               format_size(b.oldest_waiting_bytes) + ") waits";
  } else {
    s.state = "running";
    s.state_detail = job_wait_detail(in.job);
  }
}

}  // namespace

StatusInputs status_inputs(EngineCore& core) {
  StatusInputs in;
  in.budget = core.budget->status();
  auto progress = core.downloader ? core.downloader->progress() : fetch::Progress{};
  in.network = core.downloader ? core.downloader->network_status() : fetch::NetworkStatus{};
  auto hub_net = core.hub ? core.hub->network_status() : fetch::NetworkStatus{};
  if (hub_net.state != fetch::NetworkStatus::State::ok) in.network = hub_net;
  std::lock_guard lock(core.mutex);
  in.repo = core.config.source.repo;
  in.revision = core.commit_sha;
  in.paused = core.paused;
  in.done = core.done;
  in.failed = core.failed;
  in.pause_reason = core.pause_reason;
  in.last_error = core.last_error;
  in.disk_full_reason = core.disk_full_reason;
  in.starting = core.starting;
  in.endpoint = core.hub ? core.hub->endpoint() : "";
  in.budget_bytes = core.config.storage.budget;
  in.disk_bytes = core.bytes_on_disk();
  in.free_disk_floor = core.config.storage.free_disk_floor;
  in.cache_dir = core.config.storage.cache_dir.string();
  in.download_bytes_total = progress.done;
  in.files_total = static_cast<int64_t>(core.files.size());
  in.file_counts = core.ledger.file_counts(core.epoch);
  in.clip_counts = core.ledger.clip_counts();
  in.train = {core.epoch,
              core.trained_steps,
              core.samples,
              core.last_loss,
              core.backend,
              core.data_wait_fraction,
              core.checkpoint_step,
              core.loss_trend.average(),
              core.loss_trend.direction(),
              core.step_seconds,
              core.tokens_per_second,
              core.mfu};
  in.job = {core.job->rank(), core.job->world(), core.job->engine(), core.job_data_wait, -1, core.job_waiting_for};
  if (!core.job_data_wait.empty())
    in.job.slowest_rank = static_cast<int>(std::max_element(core.job_data_wait.begin(), core.job_data_wait.end()) -
                                           core.job_data_wait.begin());
  core.download_rate.sample(static_cast<double>(progress.done));
  core.decode_rate.sample(core.decoded_clips);
  in.rates = {core.download_rate.per_second(), core.decode_rate.per_second(), core.train_rate.per_second()};
  if (core.sequence) in.progress = core.sequence->progress();
  in.errors_total = core.errors_total;
  in.consumers = core.consumers_status;
  in.consumer_wait_reason = core.consumer_wait_reason;
  return in;
}

ServiceStatus derive_status(const StatusInputs& in) {
  using state::ClipState;
  using state::FileState;
  ServiceStatus s;
  s.repo = in.repo;
  s.revision = in.revision;
  s.paused = in.paused;
  s.pause_reason = in.pause_reason;
  s.budget_bytes = in.budget_bytes;
  s.disk_bytes = in.disk_bytes;
  s.reserved_bytes = in.budget.total;
  s.peak_reserved_bytes = in.budget.peak_total;
  const auto& fc = in.file_counts;
  s.files.total = in.files_total;
  s.files.done = count(fc, FileState::decoded) + count(fc, FileState::done);
  s.files.failed = count(fc, FileState::failed);
  s.files.active = count(fc, FileState::downloading) + count(fc, FileState::extracting);
  const auto& cc = in.clip_counts;
  s.clips.ready = count(cc, ClipState::ready);
  s.clips.consumed = count(cc, ClipState::consumed) + count(cc, ClipState::committed);
  s.clips.failed = count(cc, ClipState::failed);
  s.clips.deleted = count(cc, ClipState::deleted);
  s.train = in.train;
  s.job = in.job;
  // A paused run moves nothing: its rates are 0, not the last minute's.
  s.rates = in.paused ? ServiceStatus::Rates{} : in.rates;
  s.epoch_eta_seconds = epoch_eta_seconds(in, s.rates.train_samples_per_s);
  s.epoch_percent = epoch_percent(in);
  s.last_error = in.last_error;
  s.download_bytes_total = in.download_bytes_total;
  s.errors_total = in.errors_total;
  s.consumers = in.consumers;
  derive_state(in, s);
  return s;
}

}  // namespace kaio::daemon
