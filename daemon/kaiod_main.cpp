// kaiod: the service. A thin shell over the engine: arguments, config,
// logging, signals, the control socket and systemd notifications.
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "common/version.h"
#include "daemon/control.h"
#include "daemon/engine.h"
#include "daemon/notify.h"
#include "daemon/status.h"
#include "daemon/window_trace.h"

namespace {

void usage(FILE* to) {
  std::fputs(
      "usage: kaiod --config FILE      run the service\n"
      "       kaiod --check-config FILE validate a config and exit\n"
      "       kaiod --version\n",
      to);
}

int check_config(const char* file) {
  kaio::Config c = kaio::load_config(file);
  std::printf("%s: ok\n  repo %s@%s, budget %s, cache %s, state %s\n  model %s on %s, windows %dx%dx%d at %g fps\n", file,
              c.source.repo.c_str(), c.source.revision.c_str(), kaio::format_size(c.storage.budget).c_str(),
              c.storage.cache_dir.c_str(), c.storage.state_dir.c_str(), c.train.model.c_str(), c.train.backend.c_str(),
              c.decode.frames, c.decode.size, c.decode.size, c.decode.fps);
  return 0;
}

// STATUS= is one line: an error text with newlines or control characters
// (a hostile file name, a server's message) must not add lines to it.
std::string one_line(std::string text) {
  for (auto& c : text)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return text;
}

// SIGTERM, SIGINT and SIGHUP arrive on a file descriptor the main loop polls.
int block_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread starts, so all inherit it
  ::signal(SIGPIPE, SIG_IGN);
  int fd = ::signalfd(-1, &set, SFD_CLOEXEC);
  if (fd < 0) kaio::throw_errno("signalfd", "kaiod");
  return fd;
}

int run(const char* config_file) {
  kaio::Config config = kaio::load_config(config_file);
  kaio::setup_logging(config.log.level, "kaiod");
  int signals = block_signals();
  kaio::daemon::SystemdNotifier systemd;
  systemd.status("starting: recovery");
  spdlog::info("kaiod {} starting with {}", KAIO_VERSION, config_file);

  // KAIO_WINDOW_TRACE=FILE: an audit trail of every window trained (see README, Troubleshooting).
  std::unique_ptr<kaio::daemon::WindowTrace> trace;
  if (const char* trace_file = std::getenv("KAIO_WINDOW_TRACE"); trace_file && *trace_file) {
    trace = std::make_unique<kaio::daemon::WindowTrace>(trace_file);
    spdlog::info("window trace appended to {}", trace_file);
  }
  kaio::daemon::Engine engine(config, trace.get());
  kaio::daemon::ControlServer control(config.control.socket, config.control.admin_group,
                                      [&engine](const std::string& cmd, const nlohmann::json& args, const kaio::daemon::Peer& peer) {
                                        return engine.handle_control(cmd, args, peer);
                                      });
  engine.start();
  systemd.status(one_line(kaio::daemon::summary_line(engine.status())));
  systemd.ready();
  spdlog::info("kaiod ready: control socket {}", control.path().string());

  int poll_ms = 1000;
  if (auto w = systemd.watchdog_interval()) poll_ms = std::min<int>(poll_ms, static_cast<int>(w->count() / 2000));
  bool stopping = false;
  while (!stopping && !engine.finished()) {
    pollfd p{signals, POLLIN, 0};
    if (::poll(&p, 1, std::max(poll_ms, 10)) > 0) {
      signalfd_siginfo info{};
      if (::read(signals, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
        if (info.ssi_signo == SIGHUP) {
          try {
            engine.reload(kaio::load_config(config_file));
          } catch (const std::exception& e) {
            spdlog::error("reload of {} refused, keeping the running config: {}", config_file, e.what());
          }
        } else {
          spdlog::info("kaiod stopping on signal {}", strsignal(static_cast<int>(info.ssi_signo)));
          stopping = true;
        }
      }
    }
    systemd.watchdog_tick();
    systemd.status(one_line(kaio::daemon::summary_line(engine.status())));
  }
  systemd.stopping();
  systemd.extend_timeout(std::chrono::seconds(90));
  engine.stop();
  auto final_status = engine.status();
  spdlog::info("kaiod stopped: {}", kaio::daemon::summary_line(final_status));
  ::close(signals);
  return final_status.state == "error" ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
      std::printf("kaiod %s\n", KAIO_VERSION);
      return 0;
    }
    if (argc == 3 && std::strcmp(argv[1], "--check-config") == 0) return check_config(argv[2]);
    if (argc == 3 && std::strcmp(argv[1], "--config") == 0) return run(argv[2]);
    usage(stderr);
    return 2;
  } catch (const std::exception& e) {  // kaio::Error, and anything a library throws (std::bad_alloc, filesystem errors)
    std::string msg = kaio::redact(e.what());
    std::fprintf(stderr, "kaiod: %s\n", msg.c_str());
    if (spdlog::default_logger()) spdlog::critical("kaiod cannot run: {}", msg);
    return 1;
  }
}
