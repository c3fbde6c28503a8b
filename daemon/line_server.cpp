// LineServer (line_server.h): the accept thread, one thread per connection
// running its LineSession, and the bounded line reads and writes that
// ControlClient uses too.
#include "daemon/line_server.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "common/error.h"

namespace kaio::daemon {
namespace {

using Clock = LineClock;

sockaddr_un make_address(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof(addr.sun_path))
    throw Error(ErrorKind::config, "socket path " + path.string() + " is longer than " +
                                       std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return addr;
}

int millis_left(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, 1 << 30));
}

bool in_group(uid_t uid, gid_t primary, gid_t wanted) {
  if (wanted == static_cast<gid_t>(-1)) return false;
  if (primary == wanted) return true;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) return false;
  int n = 64;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (::getgrouplist(pw.pw_name, primary, groups.data(), &n) < 0) {
    groups.resize(static_cast<size_t>(n));
    if (::getgrouplist(pw.pw_name, primary, groups.data(), &n) < 0) return false;
  }
  for (int i = 0; i < n; ++i)
    if (groups[static_cast<size_t>(i)] == wanted) return true;
  return false;
}

gid_t lookup_group(const std::string& name) {
  if (name.empty()) return static_cast<gid_t>(-1);
  std::vector<char> buf(16384);
  group gr{};
  group* found = nullptr;
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || !found) return static_cast<gid_t>(-1);
  return gr.gr_gid;
}

std::string error_line(const std::string& message) {
  return nlohmann::json{{"v", 1}, {"ok", false}, {"error", message}}.dump();
}

// Refuses to steal a socket that a live daemon still answers on.
void remove_stale_socket(const std::filesystem::path& path, const std::string& what) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode))
    throw Error(ErrorKind::config, what + " socket path " + path.string() + " exists and is not a socket");
  sockaddr_un addr = make_address(path);
  bool live = false;
  {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    live = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  if (live) throw Error(ErrorKind::config, "another kaiod is serving " + path.string());
  ::unlink(path.c_str());
}

// The first chunk of a reply with its descriptors attached.
ssize_t send_with_fds(int fd, const char* data, size_t size, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(data), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  return ::sendmsg(fd, &msg, MSG_NOSIGNAL);
}

}  // namespace

Fd connect_unix(const std::filesystem::path& path) {
  sockaddr_un addr = make_address(path);
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw_errno("socket for", path.string());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw Error(ErrorKind::io, "no kaiod reachable at " + path.string() + ": " + std::strerror(errno));
  return fd;
}

bool read_line(int fd, std::string& buffer, std::string& line, Clock::time_point idle_deadline,
               std::chrono::milliseconds line_timeout) {
  auto deadline = buffer.empty() ? idle_deadline : Clock::now() + line_timeout;
  for (;;) {
    if (auto nl = buffer.find('\n'); nl != std::string::npos) {
      line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      return true;
    }
    if (buffer.size() > kMaxRequestBytes) throw std::length_error("request longer than 65536 bytes");
    int left = millis_left(deadline);
    if (left == 0) throw std::runtime_error("request not completed in time");
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, left);
    if (r <= 0) continue;  // EINTR, or the timeout the deadline check above catches
    char chunk[4096];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (buffer.empty()) return false;
      throw std::runtime_error("connection closed mid-request");
    }
    if (buffer.empty()) deadline = std::min(deadline, Clock::now() + line_timeout);
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

bool write_all(int fd, const std::string& data, Clock::time_point deadline, const std::vector<int>& fds) {
  size_t done = 0;
  while (done < data.size()) {
    int left = millis_left(deadline);
    if (left == 0) return false;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, left) <= 0) continue;
    ssize_t n = done == 0 && !fds.empty() ? send_with_fds(fd, data.data(), data.size(), fds)
                                          : ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

LineServer::LineServer(std::filesystem::path socket_path, const std::string& admin_group, SessionFactory sessions,
                       LineServerOptions options)
    : path_(std::move(socket_path)),
      admin_gid_(lookup_group(admin_group)),
      sessions_(std::move(sessions)),
      options_(std::move(options)) {
  sockaddr_un addr = make_address(path_);
  if (!path_.parent_path().empty()) std::filesystem::create_directories(path_.parent_path());
  remove_stale_socket(path_, options_.what);
  listen_fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (listen_fd_.get() < 0) throw_errno("socket for", path_.string());
  mode_t old = ::umask(0117);  // the socket is born 0660, never briefly world-writable
  int rc = ::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0) throw_errno("bind " + options_.what + " socket", path_.string());
  if (admin_gid_ != static_cast<gid_t>(-1) && ::chown(path_.c_str(), static_cast<uid_t>(-1), admin_gid_) != 0)
    spdlog::warn("{} socket {}: cannot give it group {}: {}", options_.what, path_.string(), admin_group,
                 std::strerror(errno));
  int wake[2];
  if (::listen(listen_fd_.get(), 32) != 0 || ::pipe2(wake, O_CLOEXEC) != 0) throw_errno("listen on", path_.string());
  wake_read_.reset(wake[0]);
  wake_write_.reset(wake[1]);
  thread_ = std::thread([this] { serve(); });
}

LineServer::~LineServer() {
  char byte = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_write_.get(), &byte, 1);
  if (thread_.joinable()) thread_.join();
  listen_fd_.reset();
  ::unlink(path_.c_str());
}

void LineServer::serve() {
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex mutex;
  std::set<int> active;
  std::vector<Worker> workers;
  auto reap = [&workers] {
    std::erase_if(workers, [](Worker& w) {
      if (!w.done->load()) return false;
      w.thread.join();
      return true;
    });
  };
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) break;
    if (fds[1].revents) break;
    if (!(fds[0].revents & POLLIN)) continue;
    reap();
    Fd conn(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (conn.get() < 0) continue;
    std::lock_guard lock(mutex);
    if (active.size() >= options_.max_clients) {
      write_all(conn.get(), error_line("too many " + options_.what + " connections") + "\n",
                Clock::now() + std::chrono::milliseconds(100));
      continue;
    }
    active.insert(conn.get());
    auto done = std::make_shared<std::atomic<bool>>(false);
    workers.push_back({std::thread([this, conn = std::move(conn), done, &mutex, &active]() mutable {
                         serve_client(conn.get());
                         std::lock_guard lock(mutex);
                         active.erase(conn.get());
                         conn.reset();  // under the lock: shutdown() below never meets a reused number
                         done->store(true);
                       }),
                       done});
  }
  {
    std::lock_guard lock(mutex);
    for (int fd : active) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& w : workers) w.thread.join();
}

void LineServer::serve_client(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return;
  Peer peer{cred.pid, cred.uid, cred.gid, false};
  peer.admin = cred.uid == 0 || cred.uid == ::geteuid() || in_group(cred.uid, cred.gid, admin_gid_);
  auto session = sessions_(peer);
  std::string buffer, line;
  auto idle = options_.idle_timeout;
  for (;;) {
    try {
      auto idle_deadline = idle.count() > 0 ? Clock::now() + idle : Clock::time_point::max();
      if (!read_line(fd, buffer, line, idle_deadline, options_.line_timeout)) return;
    } catch (const std::exception& e) {
      spdlog::warn("{}: uid {} pid {}: {}", options_.what, peer.uid, peer.pid, e.what());
      write_all(fd, error_line(e.what()) + "\n", Clock::now() + options_.line_timeout);
      return;
    }
    LineReply reply = session->on_line(line);
    if (!write_all(fd, reply.line + "\n", Clock::now() + options_.line_timeout, reply.fds) || reply.close) return;
  }
}

}  // namespace kaio::daemon
