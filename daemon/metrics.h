#pragma once
// Prometheus metrics: kaiod's status as the Prometheus text format (version
// 0.0.4), served at GET /metrics by cpp-httplib when `metrics.listen` is set.
// Every number comes from one ServiceStatus taken at the scrape; names, types
// and units are listed in docs/metrics.md.
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/status.h"

namespace httplib {
class Server;
}

namespace kaio::daemon {

// The exposition text for one status. `version` is kaiod's own (kaio_build_info).
std::string render_metrics(const ServiceStatus& s, const std::string& version);

using StatusSource = std::function<ServiceStatus()>;

class MetricsServer {
 public:
  // Binds host:port (port 0: any free port) and serves on its own threads.
  // Throws kaio::Error naming the address when it cannot bind.
  MetricsServer(const std::string& host, int port, StatusSource source);
  // Stops accepting, cuts open connections (a client that sends half a request
  // and stalls holds nothing up) and joins every thread.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }
  const std::string& host() const { return host_; }

 private:
  void shut_down_connections() const;

  std::string host_;
  int port_ = 0;
  StatusSource source_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable finished_cv_;
  bool finished_ = false;
};

}  // namespace kaio::daemon
