#pragma once
// Talks to systemd (Type=notify): READY=1 once the service can serve, STATUS=
// one-line summaries, WATCHDOG=1 pings, STOPPING=1 and stop-timeout extensions.
// Every call is a no-op when NOTIFY_SOCKET is not set.
#include <chrono>
#include <optional>
#include <string>

namespace kaio::daemon {

class SystemdNotifier {
 public:
  SystemdNotifier();
  void ready();
  void status(const std::string& line);
  void stopping();
  void extend_timeout(std::chrono::microseconds more);
  // Pings when half of WATCHDOG_USEC has passed since the last ping.
  void watchdog_tick();
  // How often the main loop must call watchdog_tick(), if the watchdog is on.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_half_; }

 private:
  void send(const std::string& message);

  std::optional<std::chrono::microseconds> watchdog_half_;
  std::chrono::steady_clock::time_point last_ping_{};
  std::string last_status_;
};

}  // namespace kaio::daemon
