#include "cache/budget.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <list>
#include <mutex>
#include <optional>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/units.h"

namespace kaio::cache {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

uint64_t blocks_of(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// True when `inner` is `outer` or lies below it.
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto rel = fs::weakly_canonical(inner).lexically_relative(fs::weakly_canonical(outer));
  return !rel.empty() && *rel.begin() != "..";
}

}  // namespace

struct Budget::Core {
  BudgetOptions opt;
  mutable std::mutex mu;
  std::condition_variable cv;
  uint64_t baseline = 0;
  uint64_t reserved = 0;
  uint64_t peak_total = 0;
  uint64_t fixed = 0;                      // the folders, the database files and the ledger allowance
  uint64_t standing = 0;                   // set_standing(): what the caller keeps in use for good
  std::atomic<uint64_t> largest_claim{0};  // the most one claim can ever hold; set_budget changes it
  bool cancelled = false;
  bool floor_reached = false;  // the first waiter waits for free disk

  struct Waiter {
    uint64_t need;
    const std::string* what;
    bool growth;
  };
  std::list<Waiter*> queue;

  uint64_t total() const { return baseline + opt.ledger_allowance + reserved; }

  uint64_t on_disk(uint64_t file_bytes) const {
    uint64_t b = opt.block_size;
    return (file_bytes + b - 1) / b * b + opt.per_file_allowance;
  }

  bool floor_ok(uint64_t need) const {
    if (opt.free_disk_floor == 0) return true;
    struct statvfs vfs {};
    if (::statvfs(opt.cache_dir.c_str(), &vfs) != 0) throw_errno("statvfs", opt.cache_dir.string());
    uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    return avail >= opt.free_disk_floor + need;
  }

  void check_can_fit(uint64_t claim_bytes, const std::string& what) const {
    if (claim_bytes <= largest_claim) return;
    throw Error(ErrorKind::budget, "storage.budget " + format_size(opt.budget) + " can never hold " + what +
                                       ": it needs " + format_size(claim_bytes) + " on disk, at most " +
                                       format_size(largest_claim) + " is free of fixed overhead");
  }

  void grant(uint64_t need) {
    reserved += need;
    peak_total = std::max(peak_total, total());
  }

  // Waits in FIFO order until `need` fits; false when the deadline passed first.
  bool acquire(uint64_t need, const std::string& what, bool growth, std::optional<Clock::time_point> deadline) {
    std::unique_lock lock(mu);
    if (cancelled) throw Error(ErrorKind::cancelled, "cancelled while reserving space for " + what);
    Waiter me{need, &what, growth};
    auto pos = queue.end();
    if (growth) pos = std::find_if(queue.begin(), queue.end(), [](const Waiter* w) { return !w->growth; });
    auto self = queue.insert(pos, &me);
    auto leave = [&] {
      queue.erase(self);
      cv.notify_all();
    };
    bool logged = false;
    for (;;) {
      if (cancelled) {
        leave();
        throw Error(ErrorKind::cancelled, "cancelled while waiting for space for " + what);
      }
      bool floor_blocks = false;
      if (queue.front() == &me && total() + need <= opt.budget) {
        if (floor_ok(need)) {
          floor_reached = false;
          leave();
          grant(need);
          return true;
        }
        floor_blocks = true;
      }
      if (queue.front() == &me) floor_reached = floor_blocks;
      if (deadline && Clock::now() >= *deadline) {
        leave();
        return false;
      }
      if (!logged) {
        spdlog::debug("budget: {} waits for {} ({} of {} in use{})", what, format_size(need), format_size(total()),
                      format_size(opt.budget), floor_blocks ? ", free disk floor reached" : "");
        logged = true;
      }
      auto wake = floor_blocks ? Clock::now() + opt.floor_poll : Clock::time_point::max();
      if (deadline) wake = std::min(wake, *deadline);
      if (wake == Clock::time_point::max())
        cv.wait(lock);
      else
        cv.wait_until(lock, wake);
    }
  }

  void release(uint64_t n) {
    std::lock_guard lock(mu);
    reserved -= n;
    cv.notify_all();
  }
};

namespace {

class BudgetClaim : public SpaceClaim {
 public:
  BudgetClaim(std::shared_ptr<Budget::Core> core, uint64_t bytes, uint64_t accounted, std::string what)
      : core_(std::move(core)), bytes_(bytes), accounted_(accounted), what_(std::move(what)) {}
  ~BudgetClaim() override { core_->release(accounted_); }

  uint64_t bytes() const override { return bytes_; }

  void resize(uint64_t bytes) override {
    uint64_t accounted = core_->on_disk(bytes);
    if (accounted > accounted_) {
      core_->check_can_fit(accounted, what_);
      core_->acquire(accounted - accounted_, what_, /*growth=*/true, std::nullopt);
    } else if (accounted < accounted_) {
      core_->release(accounted_ - accounted);
    }
    accounted_ = accounted;
    bytes_ = bytes;
  }

 private:
  std::shared_ptr<Budget::Core> core_;
  uint64_t bytes_;
  uint64_t accounted_;
  std::string what_;
};

}  // namespace

Budget::Budget(const BudgetOptions& options) : core_(std::make_shared<Core>()) {
  core_->opt = options;
  if (options.block_size == 0) throw Error(ErrorKind::internal, "budget: block_size must be positive");
  const auto& cache = options.cache_dir;
  const auto& state = options.state_dir;
  for (const auto& dir : {cache, state}) {
    std::error_code ec;
    if (!dir.empty()) fs::create_directories(dir, ec);
    if (ec) throw Error(ErrorKind::io, "budget: create " + dir.string() + ": " + ec.message());
  }
  uint64_t fixed = options.ledger_allowance;
  if (!state.empty() && is_within(state, cache)) {
    core_->baseline = disk_usage(cache);
  } else if (!state.empty() && is_within(cache, state)) {
    core_->baseline = disk_usage(state);
  } else {
    core_->baseline = disk_usage(cache) + (state.empty() ? 0 : disk_usage(state));
  }
  // What never goes away: the two folders themselves and the database files.
  fixed += blocks_of(cache) + blocks_of(state);
  uint64_t ledger_files = 0;
  for (const char* name : {"kaio.db", "kaio.db-wal", "kaio.db-shm"}) ledger_files += blocks_of(state / name);
  fixed += ledger_files;
  // The ledger's files live inside its allowance (it compacts to stay there),
  // so the part they already take is not counted twice: otherwise every
  // restart, with a larger ledger, would find less room than the last.
  core_->baseline -= std::min({core_->baseline, ledger_files, options.ledger_allowance});
  if (core_->total() > options.budget)
    throw Error(ErrorKind::budget, "storage.budget " + format_size(options.budget) +
                                       " is already exceeded: " + cache.string() + " and " + state.string() + " hold " +
                                       format_size(core_->baseline) + " plus " + format_size(options.ledger_allowance) +
                                       " for the ledger");
  core_->fixed = fixed;
  core_->largest_claim = options.budget > fixed ? options.budget - fixed : 0;
  core_->peak_total = core_->total();
  spdlog::info("budget: {} under {} and {}, {} on disk at start, {} for the ledger", format_size(options.budget),
               cache.string(), state.string(), format_size(core_->baseline), format_size(options.ledger_allowance));
}

Budget::~Budget() {
  cancel();
}

void Budget::set_budget(uint64_t budget) {
  std::lock_guard lock(core_->mu);
  core_->opt.budget = budget;
  uint64_t held = std::max(core_->fixed, core_->standing);
  core_->largest_claim = budget > held ? budget - held : 0;
  core_->cv.notify_all();
}

void Budget::set_standing(uint64_t bytes) {
  std::lock_guard lock(core_->mu);
  core_->standing = bytes;
  uint64_t held = std::max(core_->fixed, bytes);
  core_->largest_claim = core_->opt.budget > held ? core_->opt.budget - held : 0;
}

uint64_t Budget::on_disk_bytes(uint64_t file_bytes) const {
  return core_->on_disk(file_bytes);
}

std::unique_ptr<SpaceClaim> Budget::reserve(uint64_t bytes, const std::string& what) {
  uint64_t need = core_->on_disk(bytes);
  core_->check_can_fit(need, what);
  core_->acquire(need, what, false, std::nullopt);
  return std::make_unique<BudgetClaim>(core_, bytes, need, what);
}

std::unique_ptr<SpaceClaim> Budget::reserve(uint64_t bytes, const std::string& what, Clock::time_point deadline) {
  uint64_t need = core_->on_disk(bytes);
  core_->check_can_fit(need, what);
  if (!core_->acquire(need, what, false, deadline)) return nullptr;
  return std::make_unique<BudgetClaim>(core_, bytes, need, what);
}

std::unique_ptr<SpaceClaim> Budget::try_reserve(uint64_t bytes, const std::string& what) {
  uint64_t need = core_->on_disk(bytes);
  core_->check_can_fit(need, what);
  std::lock_guard lock(core_->mu);
  if (core_->cancelled) throw Error(ErrorKind::cancelled, "cancelled while reserving space for " + what);
  if (!core_->queue.empty() || core_->total() + need > core_->opt.budget || !core_->floor_ok(need)) return nullptr;
  core_->grant(need);
  return std::make_unique<BudgetClaim>(core_, bytes, need, what);
}

std::unique_ptr<SpaceClaim> Budget::adopt_existing(const fs::path& file) {
  uint64_t blocks = blocks_of(file);
  std::lock_guard lock(core_->mu);
  uint64_t moved = std::min(blocks, core_->baseline);
  core_->baseline -= moved;
  core_->reserved += moved;
  struct stat st {};
  uint64_t size = ::lstat(file.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return std::make_unique<BudgetClaim>(core_, size, moved, "existing " + file.string());
}

void Budget::cancel() {
  std::lock_guard lock(core_->mu);
  core_->cancelled = true;
  core_->cv.notify_all();
}

BudgetStatus Budget::status() const {
  std::lock_guard lock(core_->mu);
  BudgetStatus s;
  s.budget = core_->opt.budget;
  s.baseline = core_->baseline;
  s.ledger_allowance = core_->opt.ledger_allowance;
  s.reserved = core_->reserved;
  s.total = core_->total();
  s.peak_total = core_->peak_total;
  s.available = s.budget > s.total ? s.budget - s.total : 0;
  s.waiting = core_->queue.size();
  if (!core_->queue.empty()) {
    s.oldest_waiting_what = *core_->queue.front()->what;
    s.oldest_waiting_bytes = core_->queue.front()->need;
    s.floor_reached = core_->floor_reached;
  }
  return s;
}

void check_budget_fits(uint64_t budget, uint64_t min_work_bytes, const std::string& what) {
  if (min_work_bytes <= budget) return;
  throw Error(ErrorKind::budget, "storage.budget " + format_size(budget) + " cannot hold " + what +
                                     ": it needs at least " + format_size(min_work_bytes) + "; raise storage.budget");
}

}  // namespace kaio::cache
