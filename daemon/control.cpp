// The control socket (control.h): the request format over LineServer, and
// the client kaioctl and the tests use.
#include "daemon/control.h"

#include <memory>

#include "common/error.h"
#include "common/log.h"

namespace kaio::daemon {
namespace {

using nlohmann::json;

json error_reply(const std::string& message) {
  return {{"v", kProtocolVersion}, {"ok", false}, {"error", message}};
}

// Each connection answers its lines with the one handler.
class ControlSession : public LineSession {
 public:
  ControlSession(const Peer& peer, const ControlHandler& handler) : peer_(peer), handler_(handler) {}
  LineReply on_line(const std::string& line) override { return {reply_to_request(line, peer_, handler_), {}, false}; }

 private:
  Peer peer_;
  const ControlHandler& handler_;
};

LineServerOptions control_options(std::chrono::milliseconds client_timeout) {
  LineServerOptions options;
  options.what = "control";
  options.line_timeout = client_timeout;
  options.idle_timeout = client_timeout;
  options.max_clients = 16;
  return options;
}

}  // namespace

ControlServer::ControlServer(std::filesystem::path socket_path, std::string admin_group, ControlHandler handler,
                             std::chrono::milliseconds client_timeout)
    : handler_(std::move(handler)),
      server_(
          std::move(socket_path), admin_group,
          [this](const Peer& peer) { return std::make_unique<ControlSession>(peer, handler_); },
          control_options(client_timeout)) {}

ControlServer::~ControlServer() = default;

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
    : path_(std::move(socket_path)), timeout_(timeout), fd_(connect_unix(path_)) {}

ControlClient::~ControlClient() = default;

std::string ControlClient::call_raw(const std::string& bytes) {
  auto deadline = LineClock::now() + timeout_;
  write_all(fd_.get(), bytes, deadline);
  std::string buffer, line;
  try {
    if (!read_line(fd_.get(), buffer, line, deadline, timeout_))
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
