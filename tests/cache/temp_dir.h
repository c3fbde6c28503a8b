#pragma once
// A fresh folder under the system temp dir, removed with everything in it.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace kaio::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() /
            ("kaio-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& p, size_t n, char fill = 'x') {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  std::string block(64 * 1024, fill);
  while (n > 0) {
    size_t k = std::min(n, block.size());
    out.write(block.data(), static_cast<std::streamsize>(k));
    n -= k;
  }
}

}  // namespace kaio::testing
