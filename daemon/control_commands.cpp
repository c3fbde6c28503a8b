// The control commands (control_commands.h), one handler per name, on the
// control server's connection threads. Owns no state: they go through the core.
#include "daemon/control_commands.h"

#include <spdlog/spdlog.h>

#include <map>
#include <optional>

#include "daemon/engine_status.h"

namespace kaio::daemon {
namespace {

using nlohmann::json;
using Handler = json (*)(const ControlContext&, const std::string& cmd, const json& args, const Peer&);

json status_command(const ControlContext& context, const std::string&, const json&, const Peer&) {
  return to_json(derive_status(status_inputs(context.core)));
}

// The state names files and clips share ("failed") filter both; a name only
// one of them has lists that one alone.
json ls_command(const ControlContext& context, const std::string&, const json& args, const Peer&) {
  auto& core = context.core;
  std::optional<state::ClipState> clip_filter;
  std::optional<state::FileState> file_filter;
  std::string wanted = args.value("state", "");
  json out = {{"files", json::array()}, {"clips", json::array()}};
  bool files_ok = true, clips_ok = true;
  if (!wanted.empty()) {
    try {
      file_filter = state::parse_file_state(wanted);
    } catch (const Error&) {
      files_ok = false;
    }
    try {
      clip_filter = state::parse_clip_state(wanted);
    } catch (const Error&) {
      clips_ok = false;
    }
    if (!files_ok && !clips_ok) throw Error(ErrorKind::usage, "unknown state \"" + wanted + "\"");
  }
  if (files_ok)
    for (const auto& f : core.ledger.list_files(core.current_epoch(), file_filter))
      out["files"].push_back({{"name", f.file.path},
                              {"state", state::to_string(f.state)},
                              {"reason", f.reason},
                              {"size", f.file.size},
                              {"attempts", f.attempts}});
  if (clips_ok)
    for (const auto& c : core.ledger.list_clips(clip_filter, 1000))
      out["clips"].push_back({{"name", c.repo_path + ":" + c.member},
                              {"state", state::to_string(c.state)},
                              {"reason", c.reason},
                              {"windows", c.windows}});
  return out;
}

// Stored first, so a pause survives a restart; a pause returns once the
// trainer has checkpointed at a step boundary.
json pause_command(const ControlContext& context, const std::string& cmd, const json& args, const Peer& peer) {
  auto& core = context.core;
  if (!peer.admin)
    throw Error(ErrorKind::usage,
                cmd + " needs root, the daemon's user or a member of group " + core.config.control.admin_group);
  bool pausing = cmd == "pause";
  std::string reason = args.value("reason", std::string(pausing ? "paused by uid " + std::to_string(peer.uid) : ""));
  spdlog::info("control: {} by uid {} pid {}{}", cmd, peer.uid, peer.pid, reason.empty() ? "" : ": " + reason);
  core.ledger.set_paused(pausing, reason);
  pausing ? core.downloader->pause() : core.downloader->resume();
  std::unique_lock lock(core.mutex);
  core.paused = pausing;
  core.pause_reason = pausing ? reason : "";
  core.pause_acknowledged = false;
  core.changed.notify_all();
  if (pausing && context.trainer_running && !core.done && !core.failed) {
    bool ok = core.changed.wait_for(lock, std::chrono::seconds(60),
                                    [&] { return core.pause_acknowledged || core.done || core.failed; });
    if (!ok)
      throw Error(ErrorKind::transient, "pause stored, but the trainer did not reach a step boundary within 60 s");
  }
  return {{"paused", pausing}, {"message", core.pause_reason}};
}

const std::map<std::string, Handler> kCommands = {
    {"status", status_command},
    {"ls", ls_command},
    {"pause", pause_command},
    {"resume", pause_command},
};

}  // namespace

json run_control_command(const ControlContext& context, const std::string& cmd, const json& given_args,
                         const Peer& peer) {
  const json args = given_args.is_object() ? given_args : json::object();
  auto handler = kCommands.find(cmd);
  if (handler == kCommands.end() && (cmd == "attach" || cmd == "next" || cmd == "commit" || cmd == "detach")) {
    const auto& c = context.core.config;
    if (c.train.backend != "external")
      throw Error(ErrorKind::usage, "kaiod trains with its own trainer (train.backend is \"" + c.train.backend +
                                        "\"); set train.backend to \"external\" to consume");
    throw Error(ErrorKind::usage, "consumers use the data socket " + c.control.data_socket.string());
  }
  if (handler == kCommands.end())
    throw Error(ErrorKind::usage, "unknown command \"" + cmd + "\" (status, ls, pause, resume)");
  return handler->second(context, cmd, args, peer);
}

}  // namespace kaio::daemon
