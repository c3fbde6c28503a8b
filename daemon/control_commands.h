#pragma once
// The control commands (status, ls, pause, resume) as a table from name to
// handler, run on the control server's connection threads. They read and
// change the engine only through the core and its lock.
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/control.h"
#include "daemon/engine_core.h"

namespace kaio::daemon {

struct ControlContext {
  EngineCore& core;
  bool trainer_running;  // a pause then waits until the trainer acknowledges it
};

nlohmann::json run_control_command(const ControlContext& context, const std::string& cmd, const nlohmann::json& args,
                                   const Peer& peer);

}  // namespace kaio::daemon
