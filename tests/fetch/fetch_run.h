#pragma once
// Test helpers for the Hub client: repo files of random bytes, their sha256,
// and `kaioctl fetch` as a real process with its output captured. kaio-hub
// itself is tests/support/hub.h, the temp folder tests/support/sandbox.h.
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "fetch/hash.h"
#include "tests/support/hub.h"
#include "tests/support/process.h"
#include "tests/support/sandbox.h"

namespace kaio::test {

namespace fs = std::filesystem;

inline void write_random(const fs::path& file, size_t size, uint64_t seed) {
  fs::create_directories(file.parent_path());
  std::mt19937_64 rng(seed);
  std::string data(size, '\0');
  for (auto& c : data) c = static_cast<char>(rng());
  std::ofstream(file, std::ios::binary) << data;
}

inline std::string sha256_of(const fs::path& file) {
  return fetch::hash_file(file, fetch::HashKind::sha256, false);
}

// `kaioctl fetch ARGS...`, with `env` (env(1) arguments) in front when given.
inline CommandResult run_fetch(const std::vector<std::string>& args, const std::string& env = "") {
  std::string cmd = (env.empty() ? "" : "env " + env + " ") + shell_quote(kaioctl_bin().string()) + " fetch";
  for (const auto& a : args) cmd += " " + shell_quote(a);
  return run_command(cmd, 600);
}

}  // namespace kaio::test
