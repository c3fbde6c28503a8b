#include "cache/recovery.h"

#include <sys/stat.h>

#include <cstdio>
#include <string_view>
#include <unordered_set>

#include "common/error.h"
#include "common/log.h"
#include "common/units.h"

namespace kaio::cache {
namespace fs = std::filesystem;

namespace {

// One spelling per path: absolute, no "." or "..", no trailing separator.
std::string normal(const fs::path& p) {
  auto n = fs::absolute(p).lexically_normal();
  if (!n.has_filename() && n != n.root_path()) n = n.parent_path();
  return n.string();
}

// The split downloader's progress sidecar beside "<download>.part" (fetch/downloader.cpp ranges_path).
constexpr std::string_view kRangesSuffix = ".part.ranges";

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

uint64_t on_disk(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

struct Vouched {
  std::unordered_set<std::string> files;         // shards and downloads
  std::unordered_set<std::string> checkpoints;   // files or whole folders
  std::unordered_set<std::string> ledger_files;  // db, WAL, SHM, lock
};

class Walker {
 public:
  Walker(const Vouched& vouched, RecoveryReport& report) : vouched_(vouched), report_(report) {}

  // Deletes what nobody vouches for under `root`; remembers what exists.
  void sweep(const fs::path& root) {
    std::error_code ec;
    if (!fs::exists(root, ec)) return;
    fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
    if (ec) throw Error(ErrorKind::io, "recovery: cannot list " + root.string() + ": " + ec.message());
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) throw Error(ErrorKind::io, "recovery: cannot list " + root.string() + ": " + ec.message());
      std::string path = normal(it->path());
      if (vouched_.checkpoints.count(path)) {
        existing_.insert(path);
        it.disable_recursion_pending();
        continue;
      }
      if (it->is_directory(ec)) {
        if (roots_.count(path)) it.disable_recursion_pending();  // one root inside the other: swept on its own
        continue;
      }
      judge(path);
    }
  }

  void add_root(const fs::path& root) { roots_.insert(normal(root)); }
  bool exists(const std::string& normal_path) const { return existing_.count(normal_path) > 0; }

 private:
  void judge(const std::string& path) {
    if (vouched_.ledger_files.count(path)) return;
    if (ends_with(path, ".tmp")) {
      remove(path, report_.temporaries_deleted, report_.temporary_bytes, "temporary");
    } else if (ends_with(path, ".part") && vouched_.files.count(path.substr(0, path.size() - 5))) {
      ++report_.parts_kept;
      report_.part_bytes += fs::file_size(path);
      spdlog::info("recovery: keeping partial download {} ({}) for resume", path, format_size(fs::file_size(path)));
    } else if (ends_with(path, kRangesSuffix) && keeps_ranges(path)) {
      // A split download's part progress (fetch/downloader.cpp): without it the
      // downloader takes the scattered .part for a done prefix, the hash fails
      // and the whole file is fetched again.
      spdlog::info("recovery: keeping the part progress {} of a split download", path);
    } else if (vouched_.files.count(path)) {
      existing_.insert(path);
    } else {
      remove(path, report_.orphans_deleted, report_.orphan_bytes, "unknown to the ledger");
    }
  }

  // "<download>.part.ranges" of a vouched download whose .part is there too.
  bool keeps_ranges(const std::string& path) const {
    std::string part = path.substr(0, path.size() - kRangesSuffix.size()) + ".part";
    std::error_code ec;
    return vouched_.files.count(part.substr(0, part.size() - 5)) && fs::is_regular_file(part, ec);
  }

  void remove(const std::string& path, int64_t& count, uint64_t& bytes, const char* why) {
    uint64_t size = on_disk(path);
    if (std::remove(path.c_str()) != 0) throw_errno("recovery: delete", path);
    ++count;
    bytes += size;
    spdlog::debug("recovery: deleted {} ({}, {})", path, format_size(size), why);
  }

  const Vouched& vouched_;
  RecoveryReport& report_;
  std::unordered_set<std::string> existing_;
  std::unordered_set<std::string> roots_;
};

}  // namespace

std::string RecoveryReport::summary() const {
  return "recovery: deleted " + std::to_string(orphans_deleted) + " unknown files (" + format_size(orphan_bytes) +
         ") and " + std::to_string(temporaries_deleted) + " temporaries (" + format_size(temporary_bytes) + "), kept " +
         std::to_string(parts_kept) + " partial downloads (" + format_size(part_bytes) + "), " +
         std::to_string(shards_missing) + " shards missing, " + std::to_string(files_rolled_back) +
         " files rolled back, " + std::to_string(checkpoints_missing) + " checkpoints missing";
}

RecoveryReport recover(state::Ledger& ledger, const fs::path& cache_dir, const fs::path& state_dir) {
  RecoveryReport report;
  auto known = ledger.known_paths();
  Vouched vouched;
  for (const auto& s : known.shards) vouched.files.insert(normal(s.path));
  for (const auto& d : known.downloads) vouched.files.insert(normal(d));
  for (const auto& c : known.checkpoints) vouched.checkpoints.insert(normal(c));
  for (const char* name : {"kaio.db", "kaio.db-wal", "kaio.db-shm", "lock"})
    vouched.ledger_files.insert(normal(state_dir / name));

  Walker walker(vouched, report);
  walker.add_root(cache_dir);
  walker.add_root(state_dir);
  walker.sweep(cache_dir);
  if (normal(state_dir) != normal(cache_dir)) walker.sweep(state_dir);

  std::vector<state::ClipId> missing;
  for (const auto& s : known.shards)
    if (!walker.exists(normal(s.path))) missing.push_back(s.clip);
  report.shards_missing = static_cast<int64_t>(missing.size());

  // The checkpoint's epoch and the next one: a run stopped before the first
  // checkpoint of epoch e+1 left that epoch's files in flight too.
  int epoch = ledger.position().epoch;
  struct Rollback {
    int epoch;
    std::vector<state::FileId> to_pending, to_downloaded;
  };
  std::vector<Rollback> rollbacks;
  for (int e : {epoch, epoch + 1}) {
    Rollback r{e, {}, {}};
    for (const auto& f : ledger.list_files(e)) {
      using state::FileState;
      bool present = !f.local_path.empty() && walker.exists(normal(f.local_path));
      if (f.state == FileState::downloading ||
          ((f.state == FileState::downloaded || f.state == FileState::extracting) && !present))
        r.to_pending.push_back(f.file.id);
      else if (f.state == FileState::extracting)
        r.to_downloaded.push_back(f.file.id);
    }
    rollbacks.push_back(std::move(r));
  }

  ledger.transaction([&] {
    report.files_rolled_back = ledger.mark_shards_missing(missing, epoch);
    for (const auto& r : rollbacks) {
      ledger.force_files_state(r.to_pending, r.epoch, state::FileState::pending, "interrupted; recovered at start-up");
      ledger.force_files_state(r.to_downloaded, r.epoch, state::FileState::downloaded, "extraction interrupted");
      report.files_rolled_back += static_cast<int64_t>(r.to_pending.size() + r.to_downloaded.size());
    }
    for (const auto& c : known.checkpoints) {
      if (walker.exists(normal(c))) continue;
      ledger.remove_checkpoint(c);
      ++report.checkpoints_missing;
    }
  });
  spdlog::info("{}", report.summary());
  return report;
}

}  // namespace kaio::cache
