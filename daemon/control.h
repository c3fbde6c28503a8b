#pragma once
// The control socket: a Unix stream socket, one JSON request and one JSON reply
// per line, versioned. Request: {"v":1,"cmd":"status","args":{...}}.
// Reply: {"v":1,"ok":true,"result":{...}} or {"v":1,"ok":false,"error":"..."}.
// Each peer's uid comes from SO_PEERCRED; mutating commands need an admin.
#include <chrono>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/fd.h"
#include "daemon/line_server.h"

namespace kaio::daemon {

inline constexpr int kProtocolVersion = 1;

// Handles one parsed request; throws kaio::Error to send an error reply.
using ControlHandler =
    std::function<nlohmann::json(const std::string& cmd, const nlohmann::json& args, const Peer& peer)>;

// One request line (without its '\n') to the reply line the server sends.
// Never throws: malformed requests and handler errors become error replies.
std::string reply_to_request(const std::string& line, const Peer& peer, const ControlHandler& handler);

class ControlServer {
 public:
  // Binds `socket_path` (mode 0660, group `admin_group` when it exists) and
  // serves on its own thread. A stale socket file from a crashed run is replaced.
  ControlServer(std::filesystem::path socket_path, std::string admin_group, ControlHandler handler,
                std::chrono::milliseconds client_timeout = std::chrono::seconds(5));
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const std::filesystem::path& path() const { return server_.path(); }

 private:
  ControlHandler handler_;  // before server_: its sessions use it
  LineServer server_;
};

// The client side, used by kaioctl and the tests. Every call is bounded by `timeout`.
class ControlClient {
 public:
  ControlClient(std::filesystem::path socket_path, std::chrono::milliseconds timeout);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;
  // Sends one request and returns the whole reply object. Throws kaio::Error:
  // kind io when the daemon cannot be reached (the message names the socket).
  nlohmann::json call(const std::string& cmd, const nlohmann::json& args = nlohmann::json::object());
  // Sends raw bytes and returns the raw reply line (tests of malformed input).
  std::string call_raw(const std::string& bytes);

 private:
  std::filesystem::path path_;
  std::chrono::milliseconds timeout_;
  Fd fd_;
};

}  // namespace kaio::daemon
