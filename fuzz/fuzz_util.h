#pragma once
// Shared by the fuzz targets: a ByteSource over the fuzz input, a scratch
// folder, quiet logs, and a check that aborts (so libFuzzer and the replay
// driver both report the input) when a property the code promises is broken.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "common/io.h"

namespace kaio::fuzz {

#define KAIO_FUZZ_CHECK(cond, what)                                                         \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "fuzz property broken: %s (%s:%d)\n", what, __FILE__, __LINE__); \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)

// Hands the input out in chunks of `chunk` bytes, like a download arriving.
class MemorySource : public kaio::ByteSource {
 public:
  MemorySource(const uint8_t* data, size_t size, size_t chunk, std::string name)
      : data_(data), size_(size), chunk_(std::max<size_t>(chunk, 1)), name_(std::move(name)) {}
  size_t read(std::span<std::byte> out) override {
    size_t n = std::min({out.size(), size_ - pos_, chunk_});
    if (n) std::memcpy(out.data(), data_ + pos_, n);
    pos_ += n;
    return n;
  }
  std::string describe() const override { return name_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t chunk_;
  std::string name_;
};

// A per-process scratch folder, on tmpfs when there is one (fsync is free there).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : std::filesystem::temp_directory_path().string();
    std::string tmpl = base + "/kaio-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    std::filesystem::path p = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return p;
  }();
  return dir;
}

// Logging costs time per input and buries libFuzzer's own lines.
inline void quiet() {
  static const bool once = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)once;
}

// What every member name the archive reader hands out must be: relative, with no '..'.
inline bool safe_member_path(std::string_view p) {
  if (p.empty() || p.front() == '/' || p.front() == '\\' || (p.size() > 1 && p[1] == ':')) return false;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = p.size();
    if (p.substr(start, end - start) == "..") return false;
    start = end + 1;
  }
  return true;
}

}  // namespace kaio::fuzz
