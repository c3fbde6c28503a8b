#pragma once
// Test helper: the one kaio-hub process helper of the tests. kaio-hub on
// loopback serving ROOT/<org>/<name> (a local Hub with faults, see
// tools/kaio-hub), its output appended to a log file or left on the test's
// own; killed and reaped when the object goes away.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"

namespace kaio::test {

class HubProcess {
 public:
  // `extra`: more kaio-hub options (--faults, --token, --page-size, ...).
  explicit HubProcess(const std::filesystem::path& root, std::vector<std::string> extra = {},
                      const std::filesystem::path& log = {})
      : port_file_(root.string() + ".port") {
    std::error_code ec;
    std::filesystem::remove(port_file_, ec);
    std::vector<std::string> args = {tool("kaio-hub").string(), "--root", root.string(), "--port", "0", "--port-file",
                                     port_file_.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      if (!log.empty()) {
        int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
          ::dup2(fd, 1);
          ::dup2(fd, 2);
        }
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    // kaio-hub renames the port file into place once it listens; up to 60 s.
    for (int i = 0; i < 1200 && !std::filesystem::exists(port_file_) && running(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream(port_file_) >> port_ >> cdn_port_;
  }
  ~HubProcess() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  HubProcess(const HubProcess&) = delete;
  HubProcess& operator=(const HubProcess&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  // POST /_kaio/faults; throws with curl's output when kaio-hub refuses them.
  void faults(const nlohmann::json& j) const {
    auto r = run_command(
        "curl -s -f -m 10 -X POST --data-binary " + shell_quote(j.dump()) + " " + url() + "/_kaio/faults", 20);
    if (r.exit_code != 0) throw std::runtime_error("cannot set faults: " + r.output);
  }
  // GET /_kaio/stats; a discarded value when there is no answer.
  nlohmann::json stats() const {
    auto r = run_command("curl -s -m 10 " + url() + "/_kaio/stats", 20);
    return nlohmann::json::parse(r.output, nullptr, false);
  }

 private:
  bool running() {
    if (pid_ <= 0 || exited_) return false;
    exited_ = ::waitpid(pid_, nullptr, WNOHANG) == pid_;
    return !exited_;
  }

  std::filesystem::path port_file_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int port_ = 0, cdn_port_ = 0;
};

}  // namespace kaio::test
