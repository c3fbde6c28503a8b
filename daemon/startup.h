#pragma once
// Start-up, in two phases. The local one, in Engine's constructor: recovery,
// the budget and what it adopts from the last run, the stored pause, the Hub
// client. The remote one, in Engine::connect(), which kaiod runs beside its
// control socket and signal handling because it can wait for the network for
// as long as the Hub is down (Engine::stop() ends the wait): the pinned
// source, the trainer resumed from its latest checkpoint, the working-set
// check and the standing checkpoint claims. Both fill the core (the remote
// phase under its lock: status is served meanwhile) and keep nothing.
#include "daemon/downloads.h"
#include "daemon/engine_core.h"
#include "daemon/training_loop.h"

namespace kaio::daemon {

CheckpointRing start_up_local(EngineCore& core, Downloads& downloads);
Resumed start_up_remote(EngineCore& core, Downloads& downloads, CheckpointRing ring);

}  // namespace kaio::daemon
