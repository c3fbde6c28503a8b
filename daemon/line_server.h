#pragma once
// A Unix stream socket that speaks one JSON line each way, with a thread per
// connection: the framing, the limits, the peer credentials and the bounded
// reads and writes that the control socket and the data plane share. Each
// connection has a LineSession, created on accept and destroyed (on the
// connection's thread) when it closes; replies may carry descriptors
// (SCM_RIGHTS on their first byte).
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/fd.h"

namespace kaio::daemon {

inline constexpr size_t kMaxRequestBytes = size_t{64} * 1024;
using LineClock = std::chrono::steady_clock;

struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  bool admin = false;  // root, the daemon's own user, or a member of the admin group
};

struct LineReply {
  std::string line;      // without its '\n'
  std::vector<int> fds;  // sent with the line; the session keeps them open until the reply is sent
  bool close = false;    // close the connection after the reply
};

class LineSession {
 public:
  virtual ~LineSession() = default;
  virtual LineReply on_line(const std::string& line) = 0;
};

using SessionFactory = std::function<std::unique_ptr<LineSession>(const Peer& peer)>;

struct LineServerOptions {
  std::string what = "control";                  // names the socket in messages: "too many control connections"
  std::chrono::milliseconds line_timeout{5000};  // a request, once begun, and a reply must get through in this
  std::chrono::milliseconds idle_timeout{5000};  // between requests; 0: none (liveness is the connection)
  size_t max_clients = 16;
};

class LineServer {
 public:
  // Binds `socket_path` (mode 0660, group `admin_group` when it exists) and
  // serves on its own thread. A stale socket file from a crashed run is replaced.
  LineServer(std::filesystem::path socket_path, const std::string& admin_group, SessionFactory sessions,
             LineServerOptions options);
  ~LineServer();
  LineServer(const LineServer&) = delete;
  LineServer& operator=(const LineServer&) = delete;

  const std::filesystem::path& path() const { return path_; }

 private:
  void serve();
  void serve_client(int fd);

  std::filesystem::path path_;
  gid_t admin_gid_ = static_cast<gid_t>(-1);
  SessionFactory sessions_;
  LineServerOptions options_;
  Fd listen_fd_;
  Fd wake_read_, wake_write_;  // a byte written here ends serve()
  std::thread thread_;
};

// A connected client socket; throws Error(io) naming the socket when no one answers.
Fd connect_unix(const std::filesystem::path& path);
// Reads one '\n'-terminated line: the first byte by `idle_deadline`, the rest
// within `line_timeout` of it. False on EOF before any byte; throws a message
// for the reply on overflow (kMaxRequestBytes), timeout or a cut line.
bool read_line(int fd, std::string& buffer, std::string& line, LineClock::time_point idle_deadline,
               std::chrono::milliseconds line_timeout);
// Sends `data` before `deadline` (a peer that does not read loses it), with
// `fds` as SCM_RIGHTS on its first byte. False when it did not all go out.
bool write_all(int fd, const std::string& data, LineClock::time_point deadline, const std::vector<int>& fds = {});

}  // namespace kaio::daemon
