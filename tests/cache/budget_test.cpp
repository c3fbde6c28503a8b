#include "cache/budget.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <thread>

#include "common/error.h"
#include "common/fs.h"
#include "files.h"
#include "state/ledger.h"
#include "tests/support/disk_sampler.h"
#include "tests/support/progress_watchdog.h"
#include "tests/support/sandbox.h"

namespace fs = std::filesystem;
using kaio::cache::Budget;
using kaio::cache::BudgetOptions;
using kaio::test::Sandbox;
using kaio::testing::write_bytes;

namespace {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;

struct Folders {
  Sandbox root{"budget"};
  fs::path cache = root.path() / "cache";
  fs::path state = root.path() / "state";
  Folders() {
    fs::create_directories(cache);
    fs::create_directories(state);
  }
  uint64_t on_disk() const { return kaio::disk_usage(cache) + kaio::disk_usage(state); }
};

BudgetOptions options_for(const Folders& f, uint64_t budget_above_baseline) {
  BudgetOptions o;
  o.cache_dir = f.cache;
  o.state_dir = f.state;
  o.ledger_allowance = 0;
  o.budget = f.on_disk() + budget_above_baseline;
  return o;
}

// Polls a condition the test depends on (not a timing assertion): threads need
// to reach their wait before the test goes on.
template <typename F>
void wait_until(F&& condition) {
  auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(120);  // a bound for a hang only
  while (!condition() && std::chrono::steady_clock::now() < limit)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_TRUE(condition());
}

}  // namespace

TEST(Budget, ConcurrentWritersNeverExceedItOnDisk) {
  Folders f;
  kaio::state::LedgerOptions lo;
  lo.wal_limit_bytes = 256 * KiB;
  auto ledger = kaio::state::Ledger::open(f.state, lo);
  auto o = options_for(f, 0);
  o.ledger_allowance = 2 * MiB;
  o.budget = f.on_disk() + o.ledger_allowance + 6 * MiB;
  Budget budget(o);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> peak{0};
  std::atomic<int> samples{0};
  std::thread sampler([&] {
    while (!stop) {
      uint64_t now = f.on_disk();
      if (now > peak) peak = now;
      ++samples;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::thread ledger_writer([&] {  // the ledger grows inside its standing claim
    for (int i = 0; i < 400 && !stop; ++i) ledger.add_counter("windows_trained", 1);
  });

  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t)
    writers.emplace_back([&, t] {
      std::deque<std::pair<fs::path, std::unique_ptr<kaio::SpaceClaim>>> held;
      uint64_t x = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(t + 1);
      for (int i = 0; i < 3000 && (i < 150 || samples < 50); ++i) {  // enough work for 50 samples
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t size = 10 * KiB + x % (990 * KiB);
        if (held.size() > 1) {             // hold at most one file while waiting, so some waiter always fits
          fs::remove(held.front().first);  // unlink first, then drop the claim
          held.pop_front();
        }
        bool estimate = i % 2 == 1;  // half the time the size is only estimated (x2) up front
        auto claim = budget.reserve(estimate ? 2 * size : size, "shard " + std::to_string(t) + "/" + std::to_string(i));
        fs::path file = f.cache / ("w" + std::to_string(t) + "-" + std::to_string(i));
        write_bytes(file, size);
        if (estimate) claim->resize(size);  // the real size is known now: give the rest back
        held.emplace_back(file, std::move(claim));
      }
      while (!held.empty()) {
        fs::remove(held.front().first);
        held.pop_front();
      }
    });
  for (auto& w : writers) w.join();
  ledger_writer.join();
  stop = true;
  sampler.join();

  auto status = budget.status();
  std::printf("budget %llu, sampled peak on disk %llu over %d samples, accounted peak %llu\n",
              static_cast<unsigned long long>(o.budget), static_cast<unsigned long long>(peak.load()), samples.load(),
              static_cast<unsigned long long>(status.peak_total));
  EXPECT_LE(peak.load(), o.budget);
  EXPECT_LE(status.peak_total, o.budget);
  EXPECT_GT(status.peak_total, o.budget - 2 * MiB);  // the writers did press against the budget
  EXPECT_EQ(status.reserved, 0u);
  EXPECT_EQ(status.waiting, 0u);
}

TEST(Budget, BigReservationIsNotStarvedBySmallOnes) {
  Folders f;
  Budget budget(options_for(f, 1000 * KiB));
  auto a = budget.reserve(600 * KiB, "a");
  std::unique_ptr<kaio::SpaceClaim> b, c;
  std::thread tb([&] { b = budget.reserve(700 * KiB, "big b"); });
  wait_until([&] { return budget.status().waiting == 1; });
  std::thread tc([&] { c = budget.reserve(350 * KiB, "small c"); });
  wait_until([&] { return budget.status().waiting == 2; });
  EXPECT_EQ(budget.status().oldest_waiting_what, "big b");
  EXPECT_EQ(budget.try_reserve(4 * KiB, "tiny"), nullptr);  // fits, but others queue first

  a.reset();
  tb.join();
  ASSERT_NE(b, nullptr);
  auto st = budget.status();
  EXPECT_EQ(st.waiting, 1u);  // c still waits: it does not fit beside b
  EXPECT_EQ(st.oldest_waiting_what, "small c");
  b.reset();
  tc.join();
  ASSERT_NE(c, nullptr);
}

TEST(Budget, ResizeTruesUpAndDown) {
  Folders f;
  Budget budget(options_for(f, 1 * MiB));
  uint64_t base = budget.status().total;
  auto claim = budget.reserve(100 * KiB, "decode clip");
  EXPECT_EQ(budget.status().total - base, budget.on_disk_bytes(100 * KiB));
  EXPECT_EQ(budget.on_disk_bytes(100 * KiB), 100 * KiB + 4096);
  claim->resize(1);
  EXPECT_EQ(budget.status().total - base, 4096u + 4096u);
  claim->resize(300 * KiB);
  EXPECT_EQ(claim->bytes(), 300 * KiB);
  EXPECT_EQ(budget.status().total - base, 300 * KiB + 4096);
  EXPECT_THROW(claim->resize(2 * MiB), kaio::Error);
  claim.reset();
  EXPECT_EQ(budget.status().total, base);
}

TEST(Budget, GrowingAClaimGoesBeforeQueuedReservations) {
  Folders f;
  Budget budget(options_for(f, 1000 * KiB));
  auto a = budget.reserve(400 * KiB, "a");
  auto b = budget.reserve(300 * KiB, "b");
  std::unique_ptr<kaio::SpaceClaim> c;
  std::thread tc([&] { c = budget.reserve(500 * KiB, "c"); });
  wait_until([&] { return budget.status().waiting == 1; });
  std::thread grow([&] { a->resize(700 * KiB); });  // does not fit beside b
  wait_until([&] { return budget.status().waiting == 2; });
  EXPECT_EQ(budget.status().oldest_waiting_what, "a");
  b.reset();
  grow.join();
  EXPECT_EQ(budget.status().oldest_waiting_what, "c");
  a.reset();
  tc.join();
  EXPECT_NE(c, nullptr);
}

TEST(Budget, CancelWakesWaitersAndRefusesNewOnes) {
  Folders f;
  Budget budget(options_for(f, 100 * KiB));
  auto held = budget.reserve(90 * KiB, "held");
  std::atomic<bool> cancelled{false};
  std::thread waiter([&] {
    try {
      budget.reserve(50 * KiB, "waiter");
    } catch (const kaio::Error& e) {
      cancelled = e.kind() == kaio::ErrorKind::cancelled;
    }
  });
  wait_until([&] { return budget.status().waiting == 1; });
  budget.cancel();
  waiter.join();
  EXPECT_TRUE(cancelled);
  try {
    budget.reserve(1, "after");
    FAIL();
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::cancelled);
  }
}

TEST(Budget, NeverFittingWorkFailsAtOnceWithItsName) {
  Folders f;
  Budget budget(options_for(f, 1 * MiB));
  try {
    budget.reserve(5 * MiB, "download part-0001.tar");
    FAIL();
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::budget);
    std::string msg = e.what();
    EXPECT_NE(msg.find("download part-0001.tar"), std::string::npos) << msg;
    EXPECT_NE(msg.find("5.25 MB"), std::string::npos) << msg;  // 5 MiB + one block, in format_size
  }
  try {
    kaio::cache::check_budget_fits(1'000'000, 3'000'000, "one clip's windows plus a checkpoint");
    FAIL();
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::budget);
    EXPECT_NE(std::string(e.what()).find("one clip's windows plus a checkpoint"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("3.00 MB"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(kaio::cache::check_budget_fits(3'000'000, 3'000'000, "x"));
}

TEST(Budget, DeadlineAndTryReserveGiveUp) {
  Folders f;
  Budget budget(options_for(f, 100 * KiB));
  auto held = budget.reserve(80 * KiB, "held");
  EXPECT_EQ(budget.try_reserve(50 * KiB, "try"), nullptr);
  auto none = budget.reserve(50 * KiB, "bounded", std::chrono::steady_clock::now() + std::chrono::milliseconds(30));
  EXPECT_EQ(none, nullptr);
  EXPECT_EQ(budget.status().waiting, 0u);
  EXPECT_NE(budget.try_reserve(4 * KiB, "small"), nullptr);
}

TEST(Budget, ReloadRaisesAndLowersIt) {
  Folders f;
  Budget budget(options_for(f, 100 * KiB));
  uint64_t base = budget.status().budget - 100 * KiB;
  auto held = budget.reserve(80 * KiB, "held");
  std::unique_ptr<kaio::SpaceClaim> waiter;
  std::thread t([&] { waiter = budget.reserve(50 * KiB, "waiter"); });
  wait_until([&] { return budget.status().waiting == 1; });
  budget.set_budget(base + 200 * KiB);  // raised: the waiter goes at once
  t.join();
  ASSERT_NE(waiter, nullptr);
  EXPECT_EQ(budget.status().budget, base + 200 * KiB);
  // Lowered below what is in use: nothing new until enough is released.
  budget.set_budget(base + 60 * KiB);
  EXPECT_EQ(budget.try_reserve(1 * KiB, "small"), nullptr);
  held.reset();
  EXPECT_EQ(budget.try_reserve(8 * KiB, "still over"), nullptr);  // 54 KiB of 60 in use
  waiter.reset();
  EXPECT_NE(budget.try_reserve(8 * KiB, "after release"), nullptr);
  try {
    budget.reserve(80 * KiB, "too big for the lowered budget");
    FAIL();
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::budget) << e.what();
  }
}

TEST(Budget, FreeDiskFloorHoldsReservationsBack) {
  Folders f;
  auto o = options_for(f, 1 * MiB);
  o.free_disk_floor = std::numeric_limits<uint64_t>::max() / 4;  // more than any disk has free
  o.floor_poll = std::chrono::milliseconds(5);
  Budget budget(o);
  EXPECT_EQ(budget.try_reserve(4 * KiB, "try"), nullptr);
  EXPECT_EQ(budget.reserve(4 * KiB, "bounded", std::chrono::steady_clock::now() + std::chrono::milliseconds(30)),
            nullptr);
}

TEST(Budget, AdoptedFilesGiveTheirBytesBackWhenDeleted) {
  Folders f;
  write_bytes(f.cache / "old-shard", 200 * KiB);
  Budget budget(options_for(f, 100 * KiB));
  auto before = budget.status();
  EXPECT_GE(before.baseline, 200 * KiB);
  EXPECT_EQ(budget.try_reserve(150 * KiB, "new shard"), nullptr);
  auto adopted = budget.adopt_existing(f.cache / "old-shard");
  EXPECT_EQ(adopted->bytes(), 200 * KiB);
  EXPECT_EQ(budget.status().total, before.total);
  fs::remove(f.cache / "old-shard");
  adopted.reset();
  EXPECT_NE(budget.try_reserve(150 * KiB, "new shard"), nullptr);
}

TEST(Budget, RefusesToStartWhenTheFoldersAlreadyExceedIt) {
  Folders f;
  write_bytes(f.cache / "big", 300 * KiB);
  auto o = options_for(f, 0);
  o.budget -= 100 * KiB;
  EXPECT_THROW(Budget{o}, kaio::Error);
}

TEST(Budget, LedgerWalStaysInsideItsStandingClaim) {
  Folders f;
  kaio::state::LedgerOptions lo;
  lo.wal_limit_bytes = 256 * KiB;
  auto ledger = kaio::state::Ledger::open(f.state, lo);
  ledger.upsert_files("org/r", {{"", "a.tar", 1, "", ""}});
  auto db_files = [&] {
    uint64_t n = 0;
    for (const char* name : {"kaio.db", "kaio.db-wal", "kaio.db-shm"}) {
      struct stat st {};
      if (::stat((f.state / name).c_str(), &st) == 0) n += static_cast<uint64_t>(st.st_blocks) * 512;
    }
    return n;
  };
  uint64_t start = db_files();
  const uint64_t allowance = 2 * MiB;
  uint64_t peak_wal = 0;
  for (int i = 0; i < 2000; ++i) {
    ledger.transaction([&] {
      ledger.add_counter("windows_trained", 8);
      kaio::state::ClipRecord c;
      c.file_id = kaio::state::file_id("org/r", "a.tar");
      c.repo_path = "a.tar";
      c.member = "m" + std::to_string(i % 50) + ".mp4";  // rewritten rows: the db itself stays small
      c.shard_path = "/cache/shards/" + c.member;
      ledger.add_clips("org/r", {c});
    });
    struct stat st {};
    if (::stat((f.state / "kaio.db-wal").c_str(), &st) == 0)
      peak_wal = std::max(peak_wal, static_cast<uint64_t>(st.st_size));
    ASSERT_LE(db_files(), start + allowance) << "after commit " << i;
    ASSERT_EQ(ledger.disk_bytes(), db_files());
  }
  std::printf("ledger files: %llu at start, %llu after 2000 commits, WAL peak %llu\n",
              static_cast<unsigned long long>(start), static_cast<unsigned long long>(db_files()),
              static_cast<unsigned long long>(peak_wal));
  EXPECT_LE(peak_wal, lo.wal_limit_bytes + 64 * KiB);  // one commit past the limit at most
}

// The harness's disk sampler (tests/support/disk_sampler.h) counts files that
// are deleted but still open or mapped: they hold disk space `du` no longer sees.
TEST(DiskSampler, CountsDeletedFilesStillOpenOrMapped) {
  Folders f;
  const fs::path outside_dir = f.root.path() / "elsewhere";
  fs::create_directories(outside_dir);
  write_bytes(f.cache / "open.bin", 300 * KiB);
  write_bytes(f.cache / "mapped.bin", 200 * KiB);
  write_bytes(outside_dir / "outside.bin", 100 * KiB);
  int open_fd = ::open((f.cache / "open.bin").c_str(), O_RDONLY | O_CLOEXEC);
  int map_fd = ::open((f.cache / "mapped.bin").c_str(), O_RDONLY | O_CLOEXEC);
  int outside_fd = ::open((outside_dir / "outside.bin").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(open_fd, 0);
  ASSERT_GE(map_fd, 0);
  ASSERT_GE(outside_fd, 0);
  void* map = ::mmap(nullptr, 200 * KiB, PROT_READ, MAP_SHARED, map_fd, 0);
  ASSERT_NE(map, MAP_FAILED);
  ::close(map_fd);  // held by the mapping alone
  const uint64_t before = f.on_disk();
  fs::remove(f.cache / "open.bin");
  fs::remove(f.cache / "mapped.bin");
  fs::remove(outside_dir / "outside.bin");
  auto held = kaio::test::deleted_but_held(::getpid(), {f.cache.string(), f.state.string()});
  uint64_t bytes = 0;
  int open = 0, mapped = 0;
  for (const auto& h : held) {
    bytes += h.bytes;
    (h.open ? open : mapped)++;
    EXPECT_EQ(h.path.find("outside"), std::string::npos) << "a file outside the folders was counted: " << h.path;
  }
  EXPECT_EQ(open, 1);
  EXPECT_EQ(mapped, 1);
  EXPECT_GE(bytes, 500 * KiB);
  EXPECT_LE(bytes, 520 * KiB);
  {
    kaio::test::DiskSampler sampler({f.cache, f.state}, ::getpid());
    while (sampler.samples() < 3)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // bounded by the sampler's progress
    sampler.finish();
    EXPECT_GE(sampler.peak(), f.on_disk() + 500 * KiB) << sampler.peak_detail();
    EXPECT_GE(sampler.peak_deleted(), 500 * KiB);
    EXPECT_NE(sampler.peak_deleted_detail().find("open.bin"), std::string::npos) << sampler.peak_deleted_detail();
    EXPECT_NE(sampler.peak_deleted_detail().find("mapped.bin"), std::string::npos) << sampler.peak_deleted_detail();
  }
  {
    kaio::test::DiskSampler without_pid({f.cache, f.state});
    while (without_pid.samples() < 3) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    without_pid.finish();
    EXPECT_LT(without_pid.peak(), before) << "without a pid only what du sees is counted";
  }
  ::munmap(map, 200 * KiB);
  ::close(open_fd);
  ::close(outside_fd);
  EXPECT_TRUE(kaio::test::deleted_but_held(::getpid(), {f.cache.string(), f.state.string()}).empty());
}

// The harness's watchdog (tests/support/progress_watchdog.h) trips on a
// budget-wait with nothing moving for its whole limit, and only then.
TEST(ProgressWatchdog, TripsOnlyOnBudgetWaitWithNothingMoving) {
  using kaio::test::NoProgressTracker;
  using kaio::test::ProgressSample;
  using Clock = NoProgressTracker::Clock;
  const auto t0 = Clock::now();
  auto at = [&](int s) { return t0 + std::chrono::seconds(s); };
  ProgressSample waiting{"budget-wait", {1, 2, 3}, "{\"state\":\"budget-wait\"}"};
  ProgressSample moved{"budget-wait", {1, 2, 4}, ""};
  ProgressSample running{"running", {1, 2, 4}, ""};
  {
    NoProgressTracker t(std::chrono::seconds(120));
    for (int s = 0; s < 120; s += 10) EXPECT_FALSE(t.feed(waiting, at(s))) << s;
    EXPECT_TRUE(t.feed(waiting, at(120)));
    EXPECT_TRUE(t.tripped());
    EXPECT_NE(t.message().find("budget-wait"), std::string::npos) << t.message();
  }
  {
    NoProgressTracker t(std::chrono::seconds(120));
    for (int s = 0; s <= 100; s += 10) EXPECT_FALSE(t.feed(waiting, at(s)));
    EXPECT_FALSE(t.feed(moved, at(110)));  // something moved: the clock starts again
    for (int s = 120; s < 230; s += 10) EXPECT_FALSE(t.feed(moved, at(s))) << s;
    EXPECT_TRUE(t.feed(moved, at(230)));
  }
  {
    NoProgressTracker t(std::chrono::seconds(120));
    for (int s = 0; s <= 600; s += 10)
      EXPECT_FALSE(t.feed(s % 20 ? waiting : running, at(s))) << "not stuck in budget-wait throughout";
    NoProgressTracker still(std::chrono::seconds(120));
    for (int s = 0; s <= 600; s += 10)
      EXPECT_FALSE(still.feed(running, at(s))) << "nothing moving outside budget-wait is not its business";
  }
}
