#pragma once
// Test helper: the bytes under some folders, measured every 20 ms the way an
// operator's `du` would see them, and the highest total seen.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/fs.h"

namespace kaio::test {

class DiskSampler {
 public:
  explicit DiskSampler(std::vector<std::filesystem::path> dirs) : dirs_(std::move(dirs)) {
    thread_ = std::thread([this] {
      while (!stop_) {
        uint64_t total = 0;
        for (const auto& d : dirs_) total += disk_usage(d);  // 0 for a folder not made yet
        peak_ = std::max(peak_.load(), total);
        ++samples_;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  ~DiskSampler() { finish(); }
  DiskSampler(const DiskSampler&) = delete;
  DiskSampler& operator=(const DiskSampler&) = delete;
  void finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  uint64_t peak() const { return peak_; }
  int64_t samples() const { return samples_; }

 private:
  std::vector<std::filesystem::path> dirs_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> peak_{0};
  std::atomic<int64_t> samples_{0};
  std::thread thread_;
};

}  // namespace kaio::test
