// kaiod: the service. A thin shell over the engine: arguments, config,
// logging, signals, the control socket and systemd notifications.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "common/config.h"
#include "common/error.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/units.h"
#include "common/version.h"
#include "daemon/control.h"
#include "daemon/engine.h"
#include "daemon/metrics.h"
#include "daemon/notify.h"
#include "daemon/status.h"
#include "daemon/window_trace.h"
#include "train/collective.h"

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
  std::printf("%s: ok\n  repo %s@%s, budget %s, cache %s, state %s\n  model %s on %s, windows %dx%dx%d at %g fps\n",
              file, c.source.repo.c_str(), c.source.revision.c_str(), kaio::format_size(c.storage.budget).c_str(),
              c.storage.cache_dir.c_str(), c.storage.state_dir.c_str(), c.train.model.c_str(), c.train.backend.c_str(),
              c.decode.frames, c.decode.size, c.decode.size, c.decode.fps);
  std::printf("  metrics %s\n", c.metrics.listen.empty() ? "off" : ("http://" + c.metrics.listen + "/metrics").c_str());
  return 0;
}

// STATUS= is one line: an error text with newlines or control characters
// (a hostile file name, a server's message) must not add lines to it.
std::string one_line(std::string text) {
  for (auto& c : text)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return text;
}

// SIGTERM, SIGINT and SIGHUP arrive as bytes on a pipe the main loop polls.
// A handler, not a blocked mask with signalfd: libraries start threads before
// main (OpenBLAS's pool does, at load time) and those threads do not inherit a
// mask set later, so a process-directed SIGTERM could land on one of them and
// take the default action (die without the stop checkpoint). A handler is
// process-wide, whichever thread runs it.
int g_signal_pipe[2] = {-1, -1};

// Set once kaiod's own logger is in place: from then on a fatal error is
// logged (to the journal or stderr) instead of printed, so it appears once.
bool g_logging = false;

void on_signal(int signo) {
  int saved = errno;
  unsigned char byte = static_cast<unsigned char>(signo);
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &byte, 1);
  errno = saved;
}

int install_signal_handlers() {
  if (::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) kaio::throw_errno("pipe for signals", "kaiod");
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signo : {SIGTERM, SIGINT, SIGHUP})
    if (::sigaction(signo, &action, nullptr) != 0) kaio::throw_errno("sigaction", "kaiod");
  ::signal(SIGPIPE, SIG_IGN);
  return g_signal_pipe[0];
}

// The Hub token lives in this process's memory: no core file may carry it, and
// no other process of the same user may read it through ptrace or /proc/PID/mem.
void forbid_core_dumps() {
  rlimit none{0, 0};
  if (::setrlimit(RLIMIT_CORE, &none) != 0) kaio::throw_errno("setrlimit RLIMIT_CORE", "kaiod");
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) kaio::throw_errno("prctl PR_SET_DUMPABLE", "kaiod");
}

// One rank of an MPI job when train.world says so ("auto": when mpirun or
// srun started this process), else alone.
std::shared_ptr<kaio::train::Collective> join_job(const kaio::TrainConfig& train) {
  bool mpi = train.world == "mpi" || (train.world == "auto" && kaio::train::launched_by_mpi());
  if (!mpi) return kaio::train::make_single_collective();
  return kaio::train::make_mpi_collective(train.ordered_reduce);
}

// "{rank}" in a path (KAIO_WINDOW_TRACE) becomes this rank's number.
std::string place_rank(std::string path, int rank) {
  if (auto at = path.find("{rank}"); at != std::string::npos) path.replace(at, 6, std::to_string(rank));
  return path;
}

int run(const char* config_file) {
  forbid_core_dumps();
  kaio::Fd signals(install_signal_handlers());
  kaio::Config config = kaio::load_config(config_file);
  auto job = join_job(config.train);
  auto load = [&] {
    kaio::Config c = kaio::load_config(config_file);
    kaio::place_rank(c, job->rank(), job->world());
    return c;
  };
  config = load();
  kaio::setup_logging(config.log.level, "kaiod");
  g_logging = true;
  kaio::daemon::SystemdNotifier systemd;
  systemd.status("starting: recovery");
  spdlog::info("kaiod {} starting with {}", KAIO_VERSION, config_file);
  if (job->world() > 1)
    spdlog::info("job: rank {} of {}, all-reduce over {}", job->rank(), job->world(), job->engine());

  // KAIO_WINDOW_TRACE=FILE: an audit trail of every window trained (see README, Troubleshooting).
  std::unique_ptr<kaio::daemon::WindowTrace> trace;
  if (const char* trace_file = std::getenv("KAIO_WINDOW_TRACE"); trace_file && *trace_file) {
    trace = std::make_unique<kaio::daemon::WindowTrace>(place_rank(trace_file, job->rank()));
    spdlog::info("window trace appended to {}", place_rank(trace_file, job->rank()));
  }
  kaio::daemon::Engine engine(config, trace.get(), kaio::daemon::Engine::Startup::local, job);
  kaio::daemon::ControlServer control(
      config.control.socket, config.control.admin_group,
      [&engine](const std::string& cmd, const nlohmann::json& args, const kaio::daemon::Peer& peer) {
        return engine.handle_control(cmd, args, peer);
      });
  // metrics.listen: Prometheus /metrics, the numbers of engine.status() at each scrape.
  std::unique_ptr<kaio::daemon::MetricsServer> metrics;
  if (!config.metrics.listen.empty()) {
    metrics = std::make_unique<kaio::daemon::MetricsServer>(config.metrics.host, config.metrics.port,
                                                            [&engine] { return engine.status(); });
    std::string host =
        config.metrics.host.find(':') != std::string::npos ? "[" + config.metrics.host + "]" : config.metrics.host;
    spdlog::info("metrics at http://{}:{}/metrics", host, metrics->port());
  }
  systemd.status(one_line(kaio::daemon::summary_line(engine.status())));
  systemd.ready();
  spdlog::info("kaiod ready: control socket {}", control.path().string());
  // The rest of start-up can wait for the Hub for as long as it is down, so it
  // runs beside the signal loop: status answers meanwhile and SIGTERM ends it.
  std::atomic<bool> connected{false};
  std::exception_ptr connect_error;
  std::thread connecting([&] {
    try {
      engine.connect();
    } catch (...) {
      connect_error = std::current_exception();
    }
    connected = true;
  });
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } join_connecting{connecting};
  bool started = false;

  int poll_ms = 1000;
  if (auto w = systemd.watchdog_interval()) poll_ms = std::min<int>(poll_ms, static_cast<int>(w->count() / 2000));
  bool stopping = false;
  while (!stopping && !engine.finished()) {
    if (!started && connected) {
      connecting.join();
      if (connect_error) std::rethrow_exception(connect_error);
      engine.start();
      started = true;
    }
    pollfd p{signals.get(), POLLIN, 0};
    if (::poll(&p, 1, started ? std::max(poll_ms, 10) : 50) > 0) {
      unsigned char signo = 0;
      if (::read(signals.get(), &signo, 1) == 1) {
        if (signo == SIGHUP) {
          try {
            engine.reload(load());
          } catch (const std::exception& e) {
            spdlog::error("reload of {} refused, keeping the running config: {}", config_file, e.what());
          }
        } else {
          spdlog::info("kaiod stopping on signal {}", strsignal(signo));
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
  if (connecting.joinable()) connecting.join();
  metrics.reset();  // served through the stop checkpoint; its open connections are cut now
  auto final_status = engine.status();
  spdlog::info("kaiod stopped: {}", kaio::daemon::summary_line(final_status));
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
    if (g_logging)
      spdlog::critical("kaiod cannot run: {}", msg);
    else
      std::fprintf(stderr, "kaiod: %s\n", msg.c_str());
    return 1;
  }
}
