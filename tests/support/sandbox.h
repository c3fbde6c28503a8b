#pragma once
// Test helper: the one temp-folder sandbox of the tests. A fresh folder
// ($TMPDIR/kaio-TAG-XXXXXXXX, made by this object and no one else, with the
// umask's permissions like any folder the tests make: kaiod run as another
// user may need to enter it) that is removed with everything in it when the
// object goes away; with Sandbox::keep_on_failure it stays (and its path is
// printed) when the test that made it failed, for a look afterwards.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>

namespace kaio::test {

class Sandbox {
 public:
  enum Keep { remove_always, keep_on_failure };

  explicit Sandbox(const std::string& tag = "test", Keep keep = remove_always) : keep_(keep) {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    for (int attempt = 0; attempt < 100; ++attempt) {
      char suffix[9];
      std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(rng()));
      path_ = std::filesystem::temp_directory_path() / ("kaio-" + tag + "-" + suffix);
      if (std::filesystem::create_directory(path_)) return;  // false: it was there already
    }
    throw std::runtime_error("no fresh folder for " + path_.string());
  }
  ~Sandbox() {
    if (keep_ == keep_on_failure && ::testing::Test::HasFailure()) {
      std::fprintf(stderr, "kept for a look: %s\n", path_.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  const std::filesystem::path& path() const { return path_; }
  operator const std::filesystem::path&() const { return path_; }
  std::filesystem::path operator/(const std::filesystem::path& name) const { return path_ / name; }
  std::string string() const { return path_.string(); }

 private:
  std::filesystem::path path_;
  Keep keep_;
};

}  // namespace kaio::test
