#pragma once
// Test helper: the bytes under some folders, measured every 20 ms the way an
// operator's `du` would see them, plus the files of a process (kaiod, or the
// test process itself for in-process engine tests) that were deleted but are
// still open or mapped: `du` no longer sees them but they still hold disk
// space, so a budget check that ignored them would pass while the disk is full.
// The highest total seen is kept, with a description of the deleted files
// counted in the sample with the most deleted bytes.
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/fs.h"

namespace kaio::test {

// One deleted file still held by a process.
struct DeletedFile {
  std::string path;    // as /proc shows it, without " (deleted)"
  uint64_t bytes = 0;  // allocated (st_blocks * 512), as disk_usage counts
  bool open = false;   // an fd holds it (else only a mapping)
};

namespace detail {

inline bool strip_deleted(std::string& path) {
  static const std::string kSuffix = " (deleted)";
  if (path.size() < kSuffix.size() || path.compare(path.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
    return false;
  path.resize(path.size() - kSuffix.size());
  return true;
}

inline bool under_any(const std::string& path, const std::vector<std::string>& prefixes) {
  if (prefixes.empty()) return true;
  for (const auto& p : prefixes)
    if (path.size() > p.size() && path.compare(0, p.size(), p) == 0 && path[p.size()] == '/') return true;
  return false;
}

}  // namespace detail

// The deleted regular files `pid` still holds open (/proc/PID/fd) or mapped
// (/proc/PID/maps), each inode once, restricted to paths under `prefixes`
// (absolute, no trailing slash; empty: every deleted regular file).
inline std::vector<DeletedFile> deleted_but_held(pid_t pid, const std::vector<std::string>& prefixes) {
  std::map<std::pair<dev_t, ino_t>, DeletedFile> found;
  const std::filesystem::path proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  for (std::filesystem::directory_iterator it(proc / "fd", ec), end; !ec && it != end; it.increment(ec)) {
    std::string target = std::filesystem::read_symlink(it->path(), ec).string();
    if (ec) {
      ec.clear();
      continue;  // closed meanwhile
    }
    if (!detail::strip_deleted(target) || !detail::under_any(target, prefixes)) continue;
    struct stat st {};
    if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      continue;  // stat follows the link to the open file
    auto& f = found[{st.st_dev, st.st_ino}];
    f.path = target;
    f.bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    f.open = true;
  }
  ec.clear();
  // Mappings: "start-end perms offset dev inode path (deleted)".
  std::ifstream maps(proc / "maps");
  std::map<std::pair<std::string, uint64_t>, uint64_t>
      extent;  // (dev text, inode) -> end of the mapped part of the file
  std::map<std::pair<std::string, uint64_t>, std::pair<std::string, std::string>> mapped;  // -> (path, range)
  for (std::string line; std::getline(maps, line);) {
    if (line.find(" (deleted)") == std::string::npos) continue;
    std::istringstream ss(line);
    std::string range, perms, offset_hex, dev;
    uint64_t inode = 0;
    if (!(ss >> range >> perms >> offset_hex >> dev >> inode) || inode == 0) continue;
    std::string path;
    std::getline(ss, path);
    path.erase(0, path.find_first_not_of(' '));
    if (!detail::strip_deleted(path) || path.empty() || path[0] != '/' || !detail::under_any(path, prefixes)) continue;
    auto dash = range.find('-');
    if (dash == std::string::npos) continue;
    uint64_t start = std::stoull(range.substr(0, dash), nullptr, 16),
             stop = std::stoull(range.substr(dash + 1), nullptr, 16);
    uint64_t offset = std::stoull(offset_hex, nullptr, 16);
    auto key = std::make_pair(dev, inode);
    extent[key] = std::max(extent[key], offset + (stop - start));
    mapped.emplace(key, std::make_pair(path, range));
  }
  for (const auto& [key, where] : mapped) {
    // The size from the mapped file itself (map_files: root, or CAP_CHECKPOINT_RESTORE);
    // else the mapped extent, which is at most a page past the file's end.
    struct stat st {};
    uint64_t bytes = extent[key];
    bool have_stat = ::stat((proc / "map_files" / where.second).c_str(), &st) == 0 && S_ISREG(st.st_mode);
    if (have_stat) {
      if (found.count({st.st_dev, st.st_ino})) continue;  // also open: counted once
      bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    } else {
      bool also_open = false;  // same inode number and path as an open one
      for (const auto& [id, f] : found) also_open = also_open || (id.second == key.second && f.path == where.first);
      if (also_open) continue;
    }
    DeletedFile f;
    f.path = where.first;
    f.bytes = bytes;
    f.open = false;
    found[{have_stat ? st.st_dev : static_cast<dev_t>(-1), static_cast<ino_t>(key.second)}] = f;
  }
  std::vector<DeletedFile> out;
  for (auto& [id, f] : found) out.push_back(std::move(f));
  return out;
}

class DiskSampler {
 public:
  // `pid` > 0: also count that process's deleted-but-held files under `dirs`;
  // set_pid() follows a process that is restarted.
  explicit DiskSampler(std::vector<std::filesystem::path> dirs, pid_t pid = 0) : dirs_(std::move(dirs)), pid_(pid) {
    for (const auto& d : dirs_) {
      std::error_code ec;
      auto add = [&](std::string p) {
        while (p.size() > 1 && p.back() == '/') p.pop_back();
        if (std::find(prefixes_.begin(), prefixes_.end(), p) == prefixes_.end()) prefixes_.push_back(p);
      };
      add(std::filesystem::absolute(d, ec).lexically_normal().string());
      add(std::filesystem::weakly_canonical(d, ec).string());  // /proc shows resolved paths
    }
    thread_ = std::thread([this] {
      while (!stop_) {
        sample();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  ~DiskSampler() { finish(); }
  DiskSampler(const DiskSampler&) = delete;
  DiskSampler& operator=(const DiskSampler&) = delete;
  void set_pid(pid_t pid) { pid_ = pid; }
  void finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t peak() const { return peak_; }
  int64_t samples() const { return samples_; }
  // The most bytes seen in deleted-but-held files in one sample, and which.
  uint64_t peak_deleted() const { return peak_deleted_; }
  std::string peak_deleted_detail() const {
    std::lock_guard lock(mutex_);
    return peak_deleted_detail_;
  }
  // At the sample with the highest total: the bytes `du` saw and the deleted part.
  std::string peak_detail() const {
    std::lock_guard lock(mutex_);
    return peak_detail_;
  }

 private:
  void sample() {
    // /proc first, then the folders: a file unlinked between the two is then
    // missed in this sample rather than counted twice (once as deleted, once in
    // the folder), so a race can only make a sample lower, never higher.
    uint64_t deleted = 0;
    std::vector<DeletedFile> held;
    if (pid_t pid = pid_; pid > 0) {
      held = deleted_but_held(pid, prefixes_);
      for (const auto& f : held) deleted += f.bytes;
    }
    uint64_t visible = 0;
    for (const auto& d : dirs_) visible += disk_usage(d);  // 0 for a folder not made yet
    uint64_t total = visible + deleted;
    if (deleted > peak_deleted_) {
      std::string text;
      for (const auto& f : held)
        text += (text.empty() ? "" : ", ") + f.path + " " + std::to_string(f.bytes) + " bytes " +
                (f.open ? "open" : "mapped");
      std::lock_guard lock(mutex_);
      peak_deleted_ = deleted;
      peak_deleted_detail_ = text;
    }
    if (total > peak_) {
      std::lock_guard lock(mutex_);
      peak_ = total;
      peak_detail_ =
          std::to_string(visible) + " bytes in the folders + " + std::to_string(deleted) + " bytes deleted but held";
    }
    ++samples_;
  }

  std::vector<std::filesystem::path> dirs_;
  std::vector<std::string> prefixes_;
  std::atomic<pid_t> pid_{0};
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> peak_{0}, peak_deleted_{0};
  std::atomic<int64_t> samples_{0};
  mutable std::mutex mutex_;
  std::string peak_detail_, peak_deleted_detail_;
  std::thread thread_;
};

}  // namespace kaio::test
