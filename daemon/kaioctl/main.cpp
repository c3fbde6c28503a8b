// kaioctl: the remote. A thin client of kaiod's control socket (status, ls,
// pause, resume: here), plus the stand-alone `fetch` (fetch.cpp) and `probe`
// (probe.cpp) commands over the libraries' engines, and `report` (report.cpp)
// over the ledger. One entry point per
// command, dispatched by name from the table in main().
// Exit codes: 0 ok, 1 the daemon refused or failed, 2 usage, 3 no daemon reachable.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/version.h"
#include "daemon/control.h"
#include "daemon/kaioctl/commands.h"
#include "daemon/status.h"

namespace kaio::ctl {
namespace {

using kaio::daemon::ControlClient;
using nlohmann::json;

constexpr const char* kDefaultSocket = "/run/kaio/kaiod.sock";

// To stderr with exit code 2 after a usage error; to stdout with 0 for `kaioctl help`.
int usage(FILE* out = stderr) {
  std::fputs(
      "usage: kaioctl [--socket PATH] COMMAND\n"
      "  status [--json] [--watch]    what kaiod is doing\n"
      "  pause [--reason TEXT]        stop downloads, decodes and training (kept across restarts)\n"
      "  resume                       undo pause\n"
      "  ls [--state S] [--json]      files and clips with their state\n"
      "  consumers [--json]           data-plane consumers (train.backend \"external\")\n"
      "  fetch --repo ORG/NAME --out DIR [--revision R] [--include G]... [--exclude G]... [--endpoint URL]\n"
      "  probe FILE [--preview out.png [--window N]] [--frames T] [--stride S] [--fps F] [--size N]\n"
      "                               decode a video or archive as kaiod would (probe --help: what each does)\n"
      "  report --out FILE.svg|.html [--state-dir DIR]   the run over time, from the ledger\n"
      "  --version\n"
      "  help                         this text\n"
      "The socket is --socket, else $KAIO_SOCKET, else /run/kaio/kaiod.sock.\n",
      out);
  return out == stdout ? 0 : 2;
}

struct Args {
  std::string socket;
  std::vector<std::string> rest;
  explicit Args(const Invocation& in) : socket(in.socket), rest(in.args) {}
  bool has(const char* flag) const {
    for (const auto& a : rest)
      if (a == flag) return true;
    return false;
  }
  std::string value(const char* flag) const {
    for (size_t i = 0; i + 1 < rest.size(); ++i)
      if (rest[i] == flag) return rest[i + 1];
    return "";
  }
};

// Sends one command; prints the error and maps it to the exit code.
int call(const Args& args, const std::string& cmd, const json& params, json* result) {
  try {
    ControlClient client(args.socket, std::chrono::seconds(30));
    json reply = client.call(cmd, params);
    if (!reply.value("ok", false)) {
      std::fprintf(stderr, "kaioctl: kaiod refused %s: %s\n", cmd.c_str(),
                   reply.value("error", std::string("no reason")).c_str());
      return 1;
    }
    if (result) *result = reply["result"];
    return 0;
  } catch (const kaio::Error& e) {
    std::fprintf(stderr, "kaioctl: %s\n", e.what());
    return 3;
  }
}

}  // namespace

int status_command(const Invocation& in) {
  Args args(in);
  bool as_json = args.has("--json"), watch = args.has("--watch");
  for (;;) {
    json result;
    if (int rc = call(args, "status", json::object(), &result); rc != 0) return rc;
    if (watch && isatty(STDOUT_FILENO)) std::fputs("\033[H\033[2J", stdout);
    if (as_json)
      std::puts(result.dump(2).c_str());
    else
      std::fputs(kaio::daemon::render_status(result).c_str(), stdout);
    std::fflush(stdout);
    if (!watch) return 0;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

int consumers_command(const Invocation& in) {
  Args args(in);
  json result;
  if (int rc = call(args, "status", json::object(), &result); rc != 0) return rc;
  if (args.has("--json"))
    std::puts(result.value("consumers", json()).dump(2).c_str());
  else
    std::fputs(kaio::daemon::render_consumers(result).c_str(), stdout);
  return 0;
}

int ls_command(const Invocation& in) {
  Args args(in);
  json params = json::object();
  if (auto s = args.value("--state"); !s.empty()) params["state"] = s;
  json result;
  if (int rc = call(args, "ls", params, &result); rc != 0) return rc;
  if (args.has("--json")) {
    std::puts(result.dump(2).c_str());
    return 0;
  }
  size_t rows = 0;
  for (const char* kind : {"files", "clips"}) {
    if (!result.contains(kind)) continue;
    for (const auto& row : result[kind]) {
      ++rows;
      std::string reason = row.value("reason", "");
      std::printf("%-5s %-12s %s%s%s\n", kind, row.value("state", std::string("?")).c_str(),
                  row.value("name", std::string("?")).c_str(), reason.empty() ? "" : "  -- ", reason.c_str());
    }
  }
  if (rows == 0) {
    // Files get a row once kaiod reaches them in the current epoch, clips once decoded.
    if (auto s = args.value("--state"); !s.empty())
      std::printf("no files or clips in state %s\n", s.c_str());
    else
      std::puts("no files or clips yet: kaiod has not reached any file of this epoch");
  }
  return 0;
}

int pause_command(const Invocation& in) {
  Args args(in);
  json params = json::object();
  if (auto r = args.value("--reason"); !r.empty()) params["reason"] = r;
  json result;
  int rc = call(args, "pause", params, &result);
  if (rc == 0)
    std::printf("paused%s\n", result.value("message", std::string()).empty()
                                  ? ""
                                  : (": " + result.value("message", std::string())).c_str());
  return rc;
}

int resume_command(const Invocation& in) {
  int rc = call(Args(in), "resume", json::object(), nullptr);
  if (rc == 0) std::puts("resumed");
  return rc;
}

}  // namespace kaio::ctl

int main(int argc, char** argv) {
  using namespace kaio::ctl;
  static const std::map<std::string, int (*)(const Invocation&)> kCommands = {
      {"status", status_command},       {"ls", ls_command},         {"pause", pause_command},
      {"resume", resume_command},       {"fetch", fetch_command},   {"probe", probe_command},
      {"consumers", consumers_command}, {"report", report_command},
  };
  Invocation in;
  const char* env_socket = std::getenv("KAIO_SOCKET");
  in.socket = env_socket && *env_socket ? env_socket : kDefaultSocket;
  int i = 1;
  if (i < argc && std::strcmp(argv[i], "--version") == 0) {
    std::printf("kaioctl %s\n", KAIO_VERSION);
    return 0;
  }
  if (i + 1 < argc && std::strcmp(argv[i], "--socket") == 0) {
    in.socket = argv[i + 1];
    i += 2;
  }
  if (i >= argc) return usage();
  std::string cmd = argv[i];
  if (cmd == "help" || cmd == "--help") return usage(stdout);
  auto command = kCommands.find(cmd);
  if (command == kCommands.end()) {
    std::fprintf(stderr, "kaioctl: unknown command \"%s\"\n", kaio::printable(cmd).c_str());
    return usage();
  }
  in.args.assign(argv + i + 1, argv + argc);
  return command->second(in);
}
