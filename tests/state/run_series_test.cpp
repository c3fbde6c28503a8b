// The run's time series (state/run_series.h): bounded, thinned over the whole
// run, restarts kept, readable read-only beside the ledger's own connection.
#include "state/run_series.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>

#include "common/error.h"
#include "state/ledger.h"
#include "tests/support/sandbox.h"

namespace fs = std::filesystem;
using namespace kaio::state;
using kaio::test::Sandbox;

namespace {

constexpr int64_t kT0 = 1'800'000'000;  // unix seconds

RunSample sample(int64_t i, SampleKind kind) {
  RunSample s;
  s.t = kT0 + 60 * i;
  s.kind = kind;
  s.state = kind == SampleKind::start ? "starting" : "running";
  s.epoch = i / 1000;
  s.step = i * 10;
  s.disk_bytes = 1'000'000 + static_cast<uint64_t>(i);
  s.reserved_bytes = 2'000'000;
  s.budget_bytes = 10'000'000;
  s.download_bytes_per_s = 1.5e6;
  s.decode_clips_per_s = 2.5;
  s.train_samples_per_s = 40;
  if (i % 3 != 0) {
    s.loss = 1.0 / static_cast<double>(i + 1);
    s.loss_avg = 0.5;
  }
  s.data_wait = 0.25;
  return s;
}

uint64_t bytes_of(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

}  // namespace

TEST(RunSeries, ReadsBackWhatWasAppendedAndNoneBeforeTheFirst) {
  Sandbox dir{"series"};
  auto ledger = Ledger::open(dir.path());
  EXPECT_TRUE(ledger.run_samples().empty());
  EXPECT_TRUE(run_series::read(ledger.db_path()).empty()) << "no table yet reads as no samples";
  ledger.append_run_sample(sample(0, SampleKind::start));
  ledger.append_run_sample(sample(1, SampleKind::checkpoint));
  ledger.append_run_sample(sample(2, SampleKind::stop));
  auto rows = ledger.run_samples();
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].kind, SampleKind::start);
  EXPECT_EQ(rows[0].state, "starting");
  EXPECT_FALSE(rows[0].loss.has_value());
  EXPECT_EQ(rows[1].kind, SampleKind::checkpoint);
  EXPECT_EQ(rows[1].t, kT0 + 60);
  EXPECT_EQ(rows[1].step, 10);
  EXPECT_EQ(rows[1].disk_bytes, 1'000'001u);
  EXPECT_EQ(rows[1].budget_bytes, 10'000'000u);
  EXPECT_DOUBLE_EQ(rows[1].download_bytes_per_s, 1.5e6);
  EXPECT_DOUBLE_EQ(rows[1].decode_clips_per_s, 2.5);
  EXPECT_DOUBLE_EQ(rows[1].train_samples_per_s, 40);
  ASSERT_TRUE(rows[1].loss.has_value());
  EXPECT_DOUBLE_EQ(*rows[1].loss, 0.5);
  EXPECT_DOUBLE_EQ(*rows[1].loss_avg, 0.5);
  EXPECT_DOUBLE_EQ(rows[1].data_wait, 0.25);
  EXPECT_EQ(rows[2].kind, SampleKind::stop);
  // Read-only from another connection while this one holds the ledger (kaioctl report beside kaiod).
  auto read = run_series::read(ledger.db_path());
  ASSERT_EQ(read.size(), 3u);
  EXPECT_EQ(read[2].t, rows[2].t);
  EXPECT_EQ(read[1].loss, rows[1].loss);
}

TEST(RunSeries, ReadingAMissingLedgerNamesTheFile) {
  Sandbox dir{"series"};
  try {
    run_series::read(dir.path() / "kaio.db");
    FAIL() << "no error";
  } catch (const kaio::Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir.path() / "kaio.db").string()), std::string::npos) << e.what();
  }
}

// 100,000 appends (69 days of minutes, a checkpoint every 7th row, a restart
// every 10,000): the table stays within its cap, keeps the first and the last
// row and every restart, covers the whole run without a gap wider than two
// buckets, and kaio.db stays under 512 KiB.
TEST(RunSeries, StaysBoundedAndCoversTheWholeRunAfter100000Appends) {
  Sandbox dir{"series"};
  auto ledger = Ledger::open(dir.path());
  constexpr int64_t kAppends = 100'000;
  for (int64_t batch = 0; batch < kAppends; batch += 1000) {
    ledger.transaction([&] {
      for (int64_t i = batch; i < batch + 1000; ++i) {
        SampleKind kind = i % 10'000 == 0 ? SampleKind::start
                          : i % 7 == 0    ? SampleKind::checkpoint
                                          : SampleKind::minute;
        ledger.append_run_sample(sample(i, kind));
      }
    });
  }
  auto rows = ledger.run_samples();
  EXPECT_LE(static_cast<int64_t>(rows.size()), run_series::kCap);
  EXPECT_GE(static_cast<int64_t>(rows.size()), run_series::kCap / 4) << "thinned no further than needed";
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.front().t, kT0);
  EXPECT_EQ(rows.back().t, kT0 + 60 * (kAppends - 1));
  auto starts = std::count_if(rows.begin(), rows.end(), [](const auto& r) { return r.kind == SampleKind::start; });
  EXPECT_EQ(starts, kAppends / 10'000) << "every restart kept";
  int64_t span = rows.back().t - rows.front().t;
  int64_t bucket = 1;  // the rule's: a power of two seconds, at least span / (cap / 2)
  while (bucket < span / (run_series::kCap / 2) + 1) bucket *= 2;
  int64_t widest = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_LT(rows[i - 1].t, rows[i].t) << "oldest first";
    widest = std::max(widest, rows[i].t - rows[i - 1].t);
  }
  EXPECT_LE(widest, 2 * bucket) << "a gap in the series";
  std::printf("%zu rows of %lld appends, widest gap %lld s (bucket %lld s), kaio.db %llu bytes\n", rows.size(),
              static_cast<long long>(kAppends), static_cast<long long>(widest), static_cast<long long>(bucket),
              static_cast<unsigned long long>(bytes_of(ledger.db_path())));
  EXPECT_LT(bytes_of(ledger.db_path()), 512u << 10);
}

// A crash loop writes only start rows: past the cap the oldest go (the first
// stays), so the bound holds even then.
TEST(RunSeries, StartRowsAloneStayBounded) {
  Sandbox dir{"series"};
  auto ledger = Ledger::open(dir.path());
  ledger.transaction([&] {
    for (int64_t i = 0; i < 2 * run_series::kCap; ++i) ledger.append_run_sample(sample(i, SampleKind::start));
  });
  auto rows = ledger.run_samples();
  EXPECT_LE(static_cast<int64_t>(rows.size()), run_series::kCap);
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows.front().t, kT0);
  EXPECT_EQ(rows.back().t, kT0 + 60 * (2 * run_series::kCap - 1));
}
