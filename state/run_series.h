#pragma once
// The run's time series (issue 20's "picture of the run"): the ledger table
// run_samples, a row at each start, a minute, each durable checkpoint, each
// pause or outage beginning or ending, and a clean stop, which `kaioctl
// report` draws. The ledger's size counts against storage.budget, so the
// table is bounded: past kCap rows the minute, checkpoint and state rows are
// thinned to one per time bucket over the whole run (at most kCap / 2
// buckets), so the run stays covered at a coarser step; start and stop rows
// are kept, and so are the first and the last row.
//
// Not a schema migration: the table is created on the first append (see
// schema.cpp's kConsumersTable for why a ledger must not grow a page at open).
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kaio::state {
namespace sql {
class Database;
}

// `state`: a change into or out of a state the picture marks (paused, an outage).
enum class SampleKind { start, minute, checkpoint, stop, state };
std::string_view to_string(SampleKind k);
SampleKind parse_sample_kind(std::string_view s);  // throws Error(corrupt) naming the text

struct RunSample {
  int64_t t = 0;  // unix seconds
  SampleKind kind = SampleKind::minute;
  std::string state;  // status' state: running, paused, waiting-network, budget-wait, ...
  int64_t epoch = 0, step = 0;
  uint64_t disk_bytes = 0, reserved_bytes = 0, budget_bytes = 0;
  double download_bytes_per_s = 0, decode_clips_per_s = 0, train_samples_per_s = 0;
  std::optional<double> loss, loss_avg;  // none before this kaiod's first step
  double data_wait = 0;                  // fraction of the trainer's time spent waiting for data
};

namespace run_series {

inline constexpr int64_t kCap = 1500;  // rows; about 150 KB of ledger

// Appends a row (creating the table on first use), then thins the table when
// it holds more than `cap` rows. Call inside the ledger's write transaction.
void append(sql::Database& db, const RunSample& sample, int64_t cap = kCap);
// The thinning rule: the minute, checkpoint and state rows other than the first and
// the last keep one row (the oldest) per bucket of time, the buckets the
// smallest power of two seconds that makes at most cap / 2 of them over the
// run, aligned on unix time (between cap / 4 and cap / 2 rows remain).
// Should the start and stop rows alone still exceed `cap` (a crash loop), the
// oldest rows after the first go until cap / 2 remain.
void thin(sql::Database& db, int64_t cap);
// Every row, oldest first; none when the table does not exist.
std::vector<RunSample> samples(sql::Database& db);

// Reads the series of the ledger file `db_file` read-only, beside a running
// kaiod (WAL). Throws Error(io) naming the file when it cannot be read.
std::vector<RunSample> read(const std::filesystem::path& db_file);

}  // namespace run_series
}  // namespace kaio::state
