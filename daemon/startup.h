#pragma once
// Start-up, in Engine's constructor before any thread runs: recovery, the
// budget and what it adopts from the last run, the stored pause, the pinned
// source, the trainer resumed from its latest checkpoint, the working-set
// check and the standing checkpoint claims. It fills the core and hands the
// trainer thread its Resumed state; it keeps nothing itself.
#include "daemon/downloads.h"
#include "daemon/engine_core.h"
#include "daemon/training_loop.h"

namespace kaio::daemon {

Resumed start_up(EngineCore& core, Downloads& downloads);

}  // namespace kaio::daemon
