// SystemdNotifier against a fake NOTIFY_SOCKET: the datagrams systemd would get.
#include "daemon/notify.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "tests/support/sandbox.h"

namespace {

class FakeSystemd {
 public:
  FakeSystemd() {
    path_ = dir_ / "notify.sock";
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    timeval tv{60, 0};  // a bound on next() for a datagram that never comes
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~FakeSystemd() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::close(fd_);
  }
  std::string next() {
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }
  // A datagram already queued, or "" (a unix datagram is queued by the time send returns).
  std::string pending() {
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }

 private:
  kaio::test::Sandbox dir_{"notify"};
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace

TEST(Notify, SendsReadyStatusWatchdogAndStopping) {
  FakeSystemd systemd;
  ::setenv("WATCHDOG_USEC", "200000", 1);
  ::unsetenv("WATCHDOG_PID");
  kaio::daemon::SystemdNotifier notifier;
  ASSERT_TRUE(notifier.watchdog_interval().has_value());
  EXPECT_EQ(notifier.watchdog_interval()->count(), 100000);
  notifier.status("starting");
  EXPECT_EQ(systemd.next(), "STATUS=starting");
  notifier.status("starting");  // unchanged: not resent
  notifier.ready();
  EXPECT_EQ(systemd.next(), "READY=1\nSTATUS=starting");
  auto first = std::chrono::steady_clock::now();  // before the tick: at most the notifier's own time of it
  notifier.watchdog_tick();
  EXPECT_EQ(systemd.next(), "WATCHDOG=1");
  notifier.watchdog_tick();  // too soon: nothing
  // "Too soon" only while less than the interval has passed; on a machine so
  // loaded that this thread lost 100 ms here, the tick rightly pings.
  if (std::chrono::steady_clock::now() - first < std::chrono::milliseconds(100)) {
    EXPECT_EQ(systemd.pending(), "") << "a ping sooner than half of WATCHDOG_USEC";
  } else {
    systemd.pending();  // drop it
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(120));  // sleeps at least this long: the interval has passed
  notifier.watchdog_tick();
  EXPECT_EQ(systemd.next(), "WATCHDOG=1");
  notifier.stopping();
  EXPECT_EQ(systemd.next(), "STOPPING=1");
  notifier.extend_timeout(std::chrono::seconds(10));
  EXPECT_EQ(systemd.next(), "EXTEND_TIMEOUT_USEC=10000000");
}
