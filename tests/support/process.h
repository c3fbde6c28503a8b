#pragma once
// Test helper: the programs of this build, and running a shell command line
// with a time bound, capturing what it prints (stdout and stderr together).
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

namespace kaio::test {

// kaio-hub, kaio-mkdata: build/tools/NAME/NAME.
inline std::filesystem::path tool(const std::string& name) {
  return std::filesystem::path(KAIO_BUILD_DIR) / "tools" / name / name;
}
inline std::filesystem::path kaiod_bin() {
  return std::filesystem::path(KAIO_BUILD_DIR) / "daemon" / "kaiod";
}
inline std::filesystem::path kaioctl_bin() {
  return std::filesystem::path(KAIO_BUILD_DIR) / "daemon" / "kaioctl";
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct CommandResult {
  int exit_code = -1;  // -1 when it did not exit by itself (killed at the bound)
  std::string output;
};

inline CommandResult run_command(const std::string& cmd, int timeout_s = 60) {
  CommandResult r;
  std::string full = "timeout -s KILL " + std::to_string(timeout_s) + " " + cmd + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(full.c_str(), "r"), ::pclose);
  if (!pipe) return r;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe.get())) r.output.append(buf, n);
  int status = ::pclose(pipe.release());
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace kaio::test
