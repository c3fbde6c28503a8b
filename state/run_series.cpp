#include "state/run_series.h"

#include <sqlite3.h>

#include <algorithm>
#include <array>

#include "common/error.h"
#include "state/sqlite.h"

namespace kaio::state {
namespace {

constexpr std::array<std::string_view, 5> kKindNames{"start", "minute", "checkpoint", "stop", "state"};

// A rowid table: a row is about 100 bytes, kCap rows about 40 pages.
constexpr const char* kTable = R"sql(
CREATE TABLE IF NOT EXISTS run_samples(id INTEGER PRIMARY KEY, t INTEGER NOT NULL, kind TEXT NOT NULL,
                                       state TEXT NOT NULL, epoch INTEGER NOT NULL, step INTEGER NOT NULL,
                                       disk_bytes INTEGER NOT NULL, reserved_bytes INTEGER NOT NULL,
                                       budget_bytes INTEGER NOT NULL, download_bytes_per_s REAL NOT NULL,
                                       decode_clips_per_s REAL NOT NULL, train_samples_per_s REAL NOT NULL,
                                       loss REAL, loss_avg REAL, data_wait REAL NOT NULL);
)sql";

constexpr const char* kSelect =
    "SELECT t, kind, state, epoch, step, disk_bytes, reserved_bytes, budget_bytes, download_bytes_per_s, "
    "decode_clips_per_s, train_samples_per_s, loss, loss_avg, data_wait FROM run_samples ORDER BY id";

bool table_exists(sql::Database& db) {
  return db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'run_samples'").step();
}

std::optional<double> optional_real(const sql::Query& q, int col) {
  if (q.is_null(col)) return std::nullopt;
  return q.real(col);
}

int64_t row_count(sql::Database& db) {
  auto q = db.query("SELECT COUNT(*) FROM run_samples");
  return q.step() ? q.integer(0) : 0;
}

}  // namespace

std::string_view to_string(SampleKind k) {
  return kKindNames.at(static_cast<size_t>(k));
}

SampleKind parse_sample_kind(std::string_view s) {
  for (size_t i = 0; i < kKindNames.size(); ++i)
    if (kKindNames[i] == s) return static_cast<SampleKind>(i);
  throw Error(ErrorKind::corrupt, "run_samples: unknown kind '" + std::string(s) + "'");
}

namespace run_series {

void append(sql::Database& db, const RunSample& s, int64_t cap) {
  db.exec(kTable);
  db.query(
        "INSERT INTO run_samples(t, kind, state, epoch, step, disk_bytes, reserved_bytes, budget_bytes, "
        "download_bytes_per_s, decode_clips_per_s, train_samples_per_s, loss, loss_avg, data_wait) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        s.t, to_string(s.kind), s.state, s.epoch, s.step, s.disk_bytes, s.reserved_bytes, s.budget_bytes,
        s.download_bytes_per_s, s.decode_clips_per_s, s.train_samples_per_s, s.loss, s.loss_avg, s.data_wait)
      .run("append to run_samples");
  if (row_count(db) > cap) thin(db, cap);
}

void thin(sql::Database& db, int64_t cap) {
  int64_t first_id = 0, last_id = 0, first_t = 0, last_t = 0;
  {
    auto q = db.query("SELECT MIN(id), MAX(id), MIN(t), MAX(t) FROM run_samples");
    if (!q.step() || q.is_null(0)) return;
    first_id = q.integer(0);
    last_id = q.integer(1);
    first_t = q.integer(2);
    last_t = q.integer(3);
  }
  // Buckets of a power of two seconds, on absolute time: each thinning's
  // buckets are unions of the last one's, so kept rows never drift apart by
  // more than two buckets however often the table is thinned.
  int64_t wanted = (last_t - first_t) / std::max<int64_t>(1, cap / 2) + 1;
  int64_t width = 1;
  while (width < wanted) width *= 2;
  db.query(
        "DELETE FROM run_samples WHERE kind IN ('minute', 'checkpoint', 'state') AND id NOT IN (?, ?) AND id NOT IN "
        "(SELECT MIN(id) FROM run_samples WHERE kind IN ('minute', 'checkpoint', 'state') GROUP BY t / ?)",
        first_id, last_id, width)
      .run("thin run_samples");
  int64_t left = row_count(db);
  if (left <= cap) return;
  db.query("DELETE FROM run_samples WHERE id IN (SELECT id FROM run_samples WHERE id != ? ORDER BY id LIMIT ?)",
           first_id, left - cap / 2)
      .run("drop the oldest run_samples");
}

std::vector<RunSample> samples(sql::Database& db) {
  std::vector<RunSample> out;
  if (!table_exists(db)) return out;
  auto q = db.query(kSelect);
  while (q.step()) {
    RunSample s;
    s.t = q.integer(0);
    s.kind = parse_sample_kind(q.text(1));
    s.state = q.text(2);
    s.epoch = q.integer(3);
    s.step = q.integer(4);
    s.disk_bytes = static_cast<uint64_t>(q.integer(5));
    s.reserved_bytes = static_cast<uint64_t>(q.integer(6));
    s.budget_bytes = static_cast<uint64_t>(q.integer(7));
    s.download_bytes_per_s = q.real(8);
    s.decode_clips_per_s = q.real(9);
    s.train_samples_per_s = q.real(10);
    s.loss = optional_real(q, 11);
    s.loss_avg = optional_real(q, 12);
    s.data_wait = q.real(13);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<RunSample> read(const std::filesystem::path& db_file) {
  std::error_code ec;
  if (!std::filesystem::exists(db_file, ec))
    throw Error(ErrorKind::io, "no ledger at " + db_file.string() + " (is --state-dir kaiod's storage.state_dir?)");
  sql::Database db(db_file, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX);
  sqlite3_busy_timeout(db.get(), 5000);
  return samples(db);
}

}  // namespace run_series
}  // namespace kaio::state
