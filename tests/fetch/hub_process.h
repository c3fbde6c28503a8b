#pragma once
// Test helpers: a kaio-hub process on loopback over a generated dataset, and
// running kaio-fetch as a real process with its output captured.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fetch/hash.h"
#include "tests/support/process.h"

namespace kaio::test {

namespace fs = std::filesystem;

inline fs::path tool(const std::string& name) {
  return fs::path(KAIO_BUILD_DIR) / "tools" / name / name;
}

inline fs::path temp_dir(const std::string& tag) {
  fs::path dir =
      fs::temp_directory_path() / ("kaio-" + tag + "-" + std::to_string(::getpid()) + "-" +
                                   std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::create_directories(dir);
  return dir;
}

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

// A kaio-hub child process; killed when the object goes away.
class HubProcess {
 public:
  HubProcess(const fs::path& root, std::vector<std::string> extra = {}) {
    port_file_ = root.parent_path() / (root.filename().string() + ".port");
    std::vector<std::string> args = {tool("kaio-hub").string(), "--root", root.string(), "--port", "0", "--port-file",
                                     port_file_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    for (int i = 0; i < 600 && !fs::exists(port_file_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream(port_file_) >> port_ >> cdn_port_;
  }
  ~HubProcess() {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  bool ok() const { return port_ > 0; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // POST /_kaio/faults.
  void faults(const nlohmann::json& j) const {
    std::string cmd = "curl -s -m 10 -X POST --data-binary '" + j.dump() + "' " + url() + "/_kaio/faults >/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("cannot set faults");
  }
  nlohmann::json stats() const {
    return nlohmann::json::parse(run_command("curl -s -m 10 " + url() + "/_kaio/stats", 20).output);
  }

 private:
  fs::path port_file_;
  pid_t pid_ = -1;
  int port_ = 0, cdn_port_ = 0;
};

inline CommandResult run_fetch(const std::vector<std::string>& args, const std::string& env = "") {
  std::string cmd = (env.empty() ? "" : "env " + env + " ") + shell_quote(tool("kaio-fetch").string());
  for (const auto& a : args) cmd += " " + shell_quote(a);
  return run_command(cmd, 600);
}

}  // namespace kaio::test
