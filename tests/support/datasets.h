#pragma once
// Test helper: kaio-mkdata datasets made once per build folder and copied into
// each test that asks for the same arguments. kaio-mkdata is deterministic for
// its arguments, and ctest runs every test in its own process, so without this
// each engine test spent most of its CPU time encoding the same clips again.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "tests/support/process.h"

namespace kaio::test {

// FNV-1a: std::hash may differ between standard libraries; this names folders.
inline std::string dataset_key(const std::string& mkdata_args) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : mkdata_args) h = (h ^ c) * 1099511628211ULL;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// The folder holding `kaio-mkdata --layout llava MKDATA_ARGS`'s output, made on
// first use. Concurrent tests may both make it; the first rename wins.
inline std::filesystem::path cached_dataset(const std::string& mkdata_args) {
  namespace fs = std::filesystem;
  fs::path cache = fs::path(KAIO_BUILD_DIR) / "test-datasets" / dataset_key(mkdata_args);
  if (fs::exists(cache / ".complete")) return cache;
  fs::path tmp = cache.string() + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp.parent_path());
  auto r = run_command(shell_quote(tool("kaio-mkdata").string()) + " --layout llava --out " +
                           shell_quote(tmp.string()) + " " + mkdata_args,
                       1800);
  if (r.exit_code != 0) throw std::runtime_error("kaio-mkdata " + mkdata_args + " failed: " + r.output);
  std::ofstream(tmp / ".complete") << mkdata_args << "\n";
  std::error_code ec;
  fs::rename(tmp, cache, ec);
  if (ec) fs::remove_all(tmp);  // another test made it first
  return cache;
}

// A private copy of that dataset at `repo` (tests truncate and corrupt their copy).
inline void copy_dataset(const std::string& mkdata_args, const std::filesystem::path& repo) {
  namespace fs = std::filesystem;
  fs::path from = cached_dataset(mkdata_args);
  fs::create_directories(repo);
  for (const auto& e : fs::directory_iterator(from)) {
    if (e.path().filename().string().front() == '.') continue;
    fs::copy(e.path(), repo / e.path().filename(), fs::copy_options::recursive);
  }
}

}  // namespace kaio::test
