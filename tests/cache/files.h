#pragma once
// A file of n bytes, for tests that fill folders (the folder itself: tests/support/sandbox.h).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

namespace kaio::testing {

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
