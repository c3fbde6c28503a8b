#include "daemon/control.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <vector>

#include "common/error.h"
#include "common/log.h"

namespace kaio::daemon {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr size_t kMaxClients = 16;

sockaddr_un make_address(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof(addr.sun_path))
    throw Error(ErrorKind::config, "control socket path " + path.string() + " is longer than " +
                                       std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  return addr;
}

// Reads one '\n'-terminated line before `deadline`. Returns false on EOF
// before any byte; throws a message for the reply on overflow or timeout.
bool read_line(int fd, std::string& buffer, std::string& line, Clock::time_point deadline) {
  for (;;) {
    if (auto nl = buffer.find('\n'); nl != std::string::npos) {
      line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      return true;
    }
    if (buffer.size() > kMaxRequestBytes) throw std::length_error("request longer than 65536 bytes");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) throw std::runtime_error("request not completed in time");
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;  // timeout is caught by the deadline check above
    char chunk[4096];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (buffer.empty()) return false;
      throw std::runtime_error("connection closed mid-request");
    }
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

void write_all(int fd, const std::string& data, Clock::time_point deadline) {
  size_t done = 0;
  while (done < data.size()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return;  // a peer that does not read loses its reply
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
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

json error_reply(const std::string& message) {
  return {{"v", kProtocolVersion}, {"ok", false}, {"error", message}};
}

// Refuses to steal a socket that a live daemon still answers on.
void remove_stale_socket(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode))
    throw Error(ErrorKind::config, "control socket path " + path.string() + " exists and is not a socket");
  sockaddr_un addr = make_address(path);
  bool live = false;
  {
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    live = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  if (live) throw Error(ErrorKind::config, "another kaiod is serving " + path.string());
  ::unlink(path.c_str());
}

}  // namespace

ControlServer::ControlServer(std::filesystem::path socket_path, std::string admin_group, ControlHandler handler,
                             std::chrono::milliseconds client_timeout)
    : path_(std::move(socket_path)),
      admin_gid_(lookup_group(admin_group)),
      handler_(std::move(handler)),
      client_timeout_(client_timeout) {
  sockaddr_un addr = make_address(path_);
  if (!path_.parent_path().empty()) std::filesystem::create_directories(path_.parent_path());
  remove_stale_socket(path_);
  listen_fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (listen_fd_.get() < 0) throw_errno("socket for", path_.string());
  mode_t old = ::umask(0117);  // the socket is born 0660, never briefly world-writable
  int rc = ::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  if (rc != 0) throw_errno("bind control socket", path_.string());
  if (admin_gid_ != static_cast<gid_t>(-1) && ::chown(path_.c_str(), static_cast<uid_t>(-1), admin_gid_) != 0)
    spdlog::warn("control socket {}: cannot give it group {}: {}", path_.string(), admin_group, std::strerror(errno));
  int wake[2];
  if (::listen(listen_fd_.get(), 32) != 0 || ::pipe2(wake, O_CLOEXEC) != 0) throw_errno("listen on", path_.string());
  wake_read_.reset(wake[0]);
  wake_write_.reset(wake[1]);
  thread_ = std::thread([this] { serve(); });
}

ControlServer::~ControlServer() {
  char byte = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_write_.get(), &byte, 1);
  if (thread_.joinable()) thread_.join();
  listen_fd_.reset();
  wake_read_.reset();
  wake_write_.reset();
  ::unlink(path_.c_str());
}

void ControlServer::serve() {
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
    if (active.size() >= kMaxClients) {
      write_all(conn.get(), error_reply("too many control connections").dump() + "\n",
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

void ControlServer::serve_client(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return;
  Peer peer{cred.pid, cred.uid, cred.gid, false};
  peer.admin = cred.uid == 0 || cred.uid == ::geteuid() || in_group(cred.uid, cred.gid, admin_gid_);
  std::string buffer, line;
  for (;;) {
    try {
      if (!read_line(fd, buffer, line, Clock::now() + client_timeout_)) return;
    } catch (const std::exception& e) {
      spdlog::warn("control: uid {} pid {}: {}", peer.uid, peer.pid, e.what());
      write_all(fd, error_reply(e.what()).dump() + "\n", Clock::now() + client_timeout_);
      return;
    }
    write_all(fd, reply_to_request(line, peer, handler_) + "\n", Clock::now() + client_timeout_);
  }
}

std::string reply_to_request(const std::string& line, const Peer& peer, const ControlHandler& handler) {
  json reply;
  try {
    json request = json::parse(line);
    if (!request.is_object() || !request.contains("cmd") || !request["cmd"].is_string())
      throw Error(ErrorKind::usage, "request must be a JSON object with a string \"cmd\"");
    // Compared as a JSON number, never cast: 1e300 or 4294967297 must not pass as 1.
    if (auto v = request.find("v"); v != request.end() && !(v->is_number() && *v == kProtocolVersion))
      throw Error(ErrorKind::usage, "protocol version " + v->dump() + " is not supported (this kaiod speaks 1)");
    json args = request.value("args", json::object());
    reply = {{"v", kProtocolVersion}, {"ok", true}, {"result", handler(request["cmd"].get<std::string>(), args, peer)}};
  } catch (const json::exception& e) {
    reply = error_reply(std::string("malformed request: ") + e.what());
  } catch (const std::exception& e) {
    reply = error_reply(redact(e.what()));
  }
  return reply.dump(-1, ' ', false, json::error_handler_t::replace);
}

ControlClient::ControlClient(std::filesystem::path socket_path, std::chrono::milliseconds timeout)
    : path_(std::move(socket_path)), timeout_(timeout) {
  sockaddr_un addr = make_address(path_);
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd_.get() < 0) throw_errno("socket for", path_.string());
  if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    fd_.reset();
    throw Error(ErrorKind::io, "no kaiod reachable at " + path_.string() + ": " + std::strerror(e));
  }
}

ControlClient::~ControlClient() = default;

std::string ControlClient::call_raw(const std::string& bytes) {
  auto deadline = Clock::now() + timeout_;
  write_all(fd_.get(), bytes, deadline);
  std::string buffer, line;
  try {
    if (!read_line(fd_.get(), buffer, line, deadline))
      throw Error(ErrorKind::io, "kaiod at " + path_.string() + " closed the connection");
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(ErrorKind::io, "kaiod at " + path_.string() + ": " + e.what());
  }
  return line;
}

json ControlClient::call(const std::string& cmd, const json& args) {
  json request = {{"v", kProtocolVersion}, {"cmd", cmd}, {"args", args}};
  std::string line = call_raw(request.dump() + "\n");
  json reply = json::parse(line, nullptr, false);
  if (reply.is_discarded() || !reply.is_object())
    throw Error(ErrorKind::io, "kaiod at " + path_.string() + " sent a malformed reply");
  return reply;
}

}  // namespace kaio::daemon
