#include "daemon/metrics.h"

#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "common/version.h"

namespace kaio::daemon {
namespace {

// Label values: backslash, double quote and newline escaped (text format 0.0.4).
std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

std::string number(uint64_t v) {
  return std::to_string(v);
}
std::string number(int64_t v) {
  return std::to_string(v);
}

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  // One family: its HELP and TYPE lines, then its samples.
  void family(const std::string& name, const char* type, const char* help) {
    text_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  template <typename T>
  void sample(const std::string& name, T value, const Labels& labels = {}) {
    text_ += name;
    if (!labels.empty()) {
      text_ += "{";
      for (size_t i = 0; i < labels.size(); ++i)
        text_ += (i ? "," : "") + labels[i].first + "=\"" + label_value(labels[i].second) + "\"";
      text_ += "}";
    }
    text_ += " " + number(value) + "\n";
  }
  template <typename T>
  void one(const std::string& name, const char* type, const char* help, T value) {
    family(name, type, help);
    sample(name, value);
  }
  std::string take() { return std::move(text_); }

 private:
  std::string text_;
};

// Every state the status object can report, so that each has a series from
// the first scrape on (a state's absence is 0, not a missing series).
constexpr const char* kStates[] = {"starting",        "running",     "paused", "disk-full", "auth-required",
                                   "waiting-network", "budget-wait", "done",   "error"};

constexpr ErrorKind kErrorKinds[] = {ErrorKind::config,    ErrorKind::usage,     ErrorKind::io,
                                     ErrorKind::disk_full, ErrorKind::transient, ErrorKind::not_found,
                                     ErrorKind::auth,      ErrorKind::corrupt,   ErrorKind::rejected,
                                     ErrorKind::budget,    ErrorKind::internal};

}  // namespace

std::string render_metrics(const ServiceStatus& s, const std::string& version) {
  Exposition e;
  e.family(
      "kaio_build_info", "gauge",
      "Always 1; the labels name the kaiod version, the dataset repo, its pinned revision and the training backend.");
  e.sample("kaio_build_info", int64_t{1},
           {{"version", version}, {"repo", s.repo}, {"revision", s.revision}, {"backend", s.train.backend}});

  e.family("kaio_state", "gauge", "1 for the state kaiod is in (the state field of kaioctl status), 0 for the others.");
  bool known = false;
  for (const char* st : kStates) {
    known = known || s.state == st;
    e.sample("kaio_state", int64_t{s.state == st ? 1 : 0}, {{"state", st}});
  }
  if (!known) e.sample("kaio_state", int64_t{1}, {{"state", s.state}});
  e.one("kaio_paused", "gauge", "1 while a pause (kaioctl pause) is stored.", int64_t{s.paused ? 1 : 0});

  e.one("kaio_budget_bytes", "gauge", "storage.budget: bytes allowed on disk under cache_dir and state_dir together.",
        s.budget_bytes);
  e.one("kaio_disk_bytes", "gauge", "Bytes allocated on disk under cache_dir and state_dir, measured at the scrape.",
        s.disk_bytes);
  e.one("kaio_reserved_bytes", "gauge",
        "Bytes the budget accounts as used (on disk at start and not yet released, the ledger allowance, every claim).",
        s.reserved_bytes);
  e.one("kaio_reserved_peak_bytes", "gauge", "Highest kaio_reserved_bytes since kaiod started; never above the budget.",
        s.peak_reserved_bytes);

  e.one("kaio_files_selected", "gauge", "Files of the repo selected by source.include and source.exclude.",
        s.files.total);
  e.family("kaio_files", "gauge",
           "Files of the current epoch by state: done (decoded), active (downloading or extracting), failed.");
  e.sample("kaio_files", s.files.done, {{"state", "done"}});
  e.sample("kaio_files", s.files.active, {{"state", "active"}});
  e.sample("kaio_files", s.files.failed, {{"state", "failed"}});

  e.family("kaio_clips", "gauge",
           "Clips by state: ready (shard on disk, not yet released), consumed (covered by a checkpoint, being "
           "deleted), deleted, failed.");
  e.sample("kaio_clips", s.clips.ready, {{"state", "ready"}});
  e.sample("kaio_clips", s.clips.consumed, {{"state", "consumed"}});
  e.sample("kaio_clips", s.clips.deleted, {{"state", "deleted"}});
  e.sample("kaio_clips", s.clips.failed, {{"state", "failed"}});

  e.one("kaio_download_bytes_total", "counter", "Bytes received from the Hub since kaiod started.",
        s.download_bytes_total);
  e.one("kaio_download_bytes_per_second", "gauge", "Download rate over the last 30 s or so.", s.rates.download_bps);
  e.one("kaio_decode_clips_per_second", "gauge", "Clips decoded per second over the last 30 s or so.",
        s.rates.decode_clips_per_s);
  e.one("kaio_train_samples_per_second", "gauge", "Windows trained per second over the last 30 s or so.",
        s.rates.train_samples_per_s);

  e.one("kaio_train_epoch", "gauge", "Current epoch, from 0.", s.train.epoch);
  e.one("kaio_train_steps_total", "counter",
        "Optimizer steps done, counted across restarts (a restart resumes from the last checkpoint).", s.train.step);
  e.one("kaio_train_samples_total", "counter", "Windows trained, counted across restarts.", s.train.samples);
  e.one("kaio_train_loss", "gauge", "Loss of the last step (0 before the first).", s.train.loss);
  e.one("kaio_data_wait_ratio", "gauge", "Share of the trainer's time spent waiting for data (0 to 1).",
        s.train.wait_fraction);
  e.one("kaio_train_step_seconds", "gauge", "Seconds per optimizer step, mean of the last train.log_every steps.",
        s.train.step_seconds);
  e.one("kaio_train_tokens_per_second", "gauge", "Tokens trained per second, mean of the last train.log_every steps.",
        s.train.tokens_per_second);
  if (s.train.mfu >= 0)
    e.one("kaio_train_mfu_ratio", "gauge",
          "Model FLOPs utilisation (0 to 1): model FLOPs per second over the device's peak; absent when unknown.",
          s.train.mfu);
  e.one("kaio_checkpoint_step", "gauge", "Step of the last durable checkpoint, -1 if none.", s.train.checkpoint_step);
  if (s.epoch_eta_seconds >= 0)
    e.one("kaio_epoch_eta_seconds", "gauge", "Estimated seconds to the end of the epoch.", s.epoch_eta_seconds);
  if (s.epoch_percent >= 0)
    e.one("kaio_epoch_percent", "gauge", "Estimated share of the epoch's windows trained, 0 to 100.", s.epoch_percent);

  e.family("kaio_errors_total", "counter",
           "Failures since kaiod started, by kind (transient: network or server, corrupt: bad data, ...).");
  std::map<std::string, uint64_t> errors;
  for (ErrorKind k : kErrorKinds) errors[std::string(to_string(k))] = 0;
  for (const auto& [kind, n] : s.errors_total) errors[kind] = n;
  for (const auto& [kind, n] : errors) e.sample("kaio_errors_total", n, {{"kind", kind}});
  return e.take();
}

MetricsServer::MetricsServer(const std::string& host, int port, StatusSource source)
    : host_(host), source_(std::move(source)), server_(std::make_unique<httplib::Server>()) {
  std::string where = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
  auto& srv = *server_;
  // Two workers are plenty for a scraper or two; every read and write is bounded.
  // httplib owns the queue it is handed as a raw pointer.
  srv.new_task_queue = [] { return std::make_unique<httplib::ThreadPool>(2).release(); };
  srv.set_read_timeout(5, 0);
  srv.set_write_timeout(5, 0);
  srv.set_keep_alive_timeout(2);
  srv.set_keep_alive_max_count(100);
  srv.set_payload_max_length(size_t{64} * 1024);
  srv.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_metrics(source_(), KAIO_VERSION), "text/plain; version=0.0.4; charset=utf-8");
  });
  srv.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("kaiod: Prometheus metrics are at /metrics\n", "text/plain; charset=utf-8");
  });
  srv.set_exception_handler([](const httplib::Request& req, httplib::Response& res, const std::exception_ptr& ep) {
    std::string why = "unknown error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& ex) {
      why = ex.what();
    } catch (...) {
    }
    why = redact(why);
    spdlog::warn("metrics: {} failed: {}", printable(req.path), why);
    res.status = 500;
    res.set_content("kaiod could not read its status: " + why + "\n", "text/plain; charset=utf-8");
  });

  errno = 0;
  bool bound = false;
  if (port == 0) {
    int p = srv.bind_to_any_port(host);
    bound = p > 0;
    port_ = p;
  } else {
    bound = srv.bind_to_port(host, port);
    port_ = port;
  }
  if (!bound) {
    int err = errno;
    throw Error(ErrorKind::config,
                "metrics.listen " + where + ": cannot listen there" +
                    (err ? std::string(": ") + std::strerror(err) : std::string(" (not a local address?)")));
  }
  thread_ = std::thread([this] {
    server_->listen_after_bind();
    std::lock_guard lock(mutex_);
    finished_ = true;
    finished_cv_.notify_all();
  });
}

// The connections accepted on our port: a worker blocked reading a stalled
// request is woken by shutdown(2), so the pool can be joined at once. Run
// while kaiod is stopping; kaiod then makes no outgoing connection that could
// hold our port as its own local port.
void MetricsServer::shut_down_connections() const {
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir("/proc/self/fd"), ::closedir);
  if (!dir) return;
  while (dirent* entry = ::readdir(dir.get())) {
    char* end = nullptr;
    long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == ::dirfd(dir.get())) continue;
    struct stat st {};
    if (::fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    if (::getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &local_len) != 0) continue;
    int local_port = -1;
    if (local.ss_family == AF_INET)
      local_port = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
    else if (local.ss_family == AF_INET6)
      local_port = ntohs(reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
    if (local_port != port_) continue;
    if (::getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0)
      continue;  // the listener
    ::shutdown(static_cast<int>(fd), SHUT_RDWR);
  }
}

MetricsServer::~MetricsServer() {
  std::unique_lock lock(mutex_);
  // stop() does nothing before listen_after_bind() has marked the server
  // running, and must be called once only (it asserts the socket is open).
  while (!finished_ && !server_->is_running()) finished_cv_.wait_for(lock, std::chrono::milliseconds(5));
  if (!finished_) {
    lock.unlock();
    server_->stop();
    lock.lock();
  }
  while (!finished_) {
    lock.unlock();
    shut_down_connections();
    lock.lock();
    finished_cv_.wait_for(lock, std::chrono::milliseconds(50));
  }
  lock.unlock();
  thread_.join();
}

}  // namespace kaio::daemon
