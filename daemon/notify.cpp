#include "daemon/notify.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>

#include "common/log.h"

namespace kaio::daemon {

SystemdNotifier::SystemdNotifier() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) watchdog_half_ = std::chrono::microseconds(usec / 2);
}

void SystemdNotifier::send(const std::string& message) {
  sd_notify(0, message.c_str());
}

void SystemdNotifier::ready() {
  send("READY=1\nSTATUS=" + redact(last_status_));
}

void SystemdNotifier::status(const std::string& line) {
  if (line == last_status_) return;
  last_status_ = line;
  send("STATUS=" + redact(line));
}

void SystemdNotifier::stopping() {
  send("STOPPING=1");
}

void SystemdNotifier::extend_timeout(std::chrono::microseconds more) {
  send("EXTEND_TIMEOUT_USEC=" + std::to_string(more.count()));
}

void SystemdNotifier::watchdog_tick() {
  if (!watchdog_half_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ping_ < *watchdog_half_) return;
  last_ping_ = now;
  send("WATCHDOG=1");
}

}  // namespace kaio::daemon
