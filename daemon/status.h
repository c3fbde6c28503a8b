#pragma once
// What `kaioctl status --json` prints, documented field by field in the README.
// Version 1; fields are only ever added.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kaio::daemon {

inline constexpr int kStatusVersion = 1;

// starting, running, paused, waiting-network, auth-required, budget-wait, done, error
struct ServiceStatus {
  std::string state = "starting";
  std::string state_detail;  // next retry time, the waiting reservation, the error
  bool paused = false;
  std::string pause_reason;
  uint64_t budget_bytes = 0;
  uint64_t disk_bytes = 0;      // measured under cache_dir + state_dir
  uint64_t reserved_bytes = 0;  // held by reservations (>= what is on disk for them)
  uint64_t peak_reserved_bytes = 0;
  struct Files {
    int64_t total = 0, done = 0, failed = 0, active = 0;
  } files;
  struct Clips {
    int64_t ready = 0, consumed = 0, failed = 0, deleted = 0;
  } clips;
  struct Train {
    int64_t epoch = 0, step = 0, samples = 0;
    double loss = 0;
    std::string backend;
    double wait_fraction = 0;
    int64_t checkpoint_step = -1;
    double loss_avg = 0;     // LossTrend::average()
    std::string loss_trend;  // LossTrend::direction()
    // train::Throughput: means over the last train.log_every steps; mfu -1 unknown.
    double step_seconds = 0, tokens_per_second = 0, mfu = -1;
  } train;
  struct Job {  // the data-parallel job this kaiod is a rank of (docs/multi-rank.md)
    int rank = 0, world = 1;
    std::string allreduce = "none";          // what carries the gradient all-reduce
    std::vector<double> data_wait_seconds;   // by rank: waiting for its own data (empty alone)
    int slowest_rank = -1;                   // the rank that waited longest for its data; -1 alone
    std::map<int, std::string> waiting_for;  // ranks without a batch at the last agreement: what each waits for
  } job;
  struct Rates {
    double download_bps = 0, decode_clips_per_s = 0, train_samples_per_s = 0;
  } rates;
  double epoch_eta_seconds = -1;  // -1 when unknown
  double epoch_percent = -1;      // share of the epoch's windows trained, 0 to 100; -1 when unknown
  std::string last_error;
  std::string repo, revision;
  // Counters since this kaiod started (Prometheus counters, docs/metrics.md).
  uint64_t download_bytes_total = 0;  // bytes received from the Hub
  std::map<std::string, uint64_t>
      errors_total;          // failures by kaio::ErrorKind name (to_string): transient, corrupt, ...
  nlohmann::json consumers;  // train.backend "external": one object per consumer (docs/data-plane.md); null otherwise
};

// One step's loss on a small batch is mostly noise: status shows it beside
// its average over about the last 50 steps and whether that falls.
class LossTrend {
 public:
  void add(double loss);
  double average() const { return slow_; }
  // "falling", "flat" or "rising" (the last ~10 steps' average against the
  // last ~50's, 2% either way); "" before 20 steps.
  std::string direction() const;

 private:
  double fast_ = 0, slow_ = 0;
  int64_t steps_ = 0;
};

nlohmann::json to_json(const ServiceStatus& s);
// One line for systemd's STATUS=: state, disk/budget, step, loss, download rate.
std::string summary_line(const ServiceStatus& s);
// The human form `kaioctl status` prints, from the JSON object.
std::string render_status(const nlohmann::json& status);
// The table `kaioctl consumers` prints from the status object's consumers
// section (train.backend "external"): one row per rank.
std::string render_consumers(const nlohmann::json& status);

}  // namespace kaio::daemon
