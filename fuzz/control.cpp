// The control protocol: request lines as kaiod's server reads them, answered
// by a handler that reads args the way the engine's does.
// Properties: every reply is one JSON object with "v":1 and a boolean "ok",
// on one line; nothing escapes.
#include "daemon/control.h"

#include <cstdint>
#include <string>

#include "common/error.h"
#include "fuzz/fuzz_util.h"

using namespace kaio;
using nlohmann::json;

namespace {

json handler(const std::string& cmd, const json& given_args, const daemon::Peer& peer) {
  const json args = given_args.is_object() ? given_args : json::object();
  if (cmd == "status") return {{"version", 1}, {"state", "running"}};
  if (cmd == "ls") {
    std::string wanted = args.value("state", "");
    if (!wanted.empty() && wanted != "failed" && wanted != "done")
      throw Error(ErrorKind::usage, "unknown state \"" + wanted + "\"");
    return {{"files", json::array()}, {"clips", json::array()}};
  }
  if (cmd == "pause" || cmd == "resume") {
    if (!peer.admin) throw Error(ErrorKind::usage, cmd + " needs an admin");
    std::string reason = args.value("reason", std::string("paused by uid ") + std::to_string(peer.uid));
    return {{"paused", cmd == "pause"}, {"message", reason}};
  }
  throw Error(ErrorKind::usage, "unknown command \"" + cmd + "\"");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::quiet();
  const std::string text(reinterpret_cast<const char*>(data), size);
  daemon::Peer peer{1234, 1000, 1000, size % 2 == 0};
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.size() > daemon::kMaxRequestBytes) continue;  // the server refuses these before parsing
    std::string reply = daemon::reply_to_request(line, peer, handler);
    KAIO_FUZZ_CHECK(reply.find('\n') == std::string::npos, "a reply is one line");
    json parsed = json::parse(reply, nullptr, false);
    KAIO_FUZZ_CHECK(parsed.is_object(), "a reply is a JSON object");
    KAIO_FUZZ_CHECK(parsed.value("v", 0) == 1, "a reply says v:1");
    KAIO_FUZZ_CHECK(parsed.contains("ok") && parsed["ok"].is_boolean(), "a reply says ok");
    // Only version 1 is spoken: any other "v" is refused, however it is spelled.
    json request = json::parse(line, nullptr, false);
    if (request.is_object() && request.contains("v") && !(request["v"].is_number() && request["v"] == 1))
      KAIO_FUZZ_CHECK(!parsed["ok"].get<bool>(), "a request that is not v:1 is refused");
  }
  return 0;
}
