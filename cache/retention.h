#pragma once
// Deletion tied to durability: a clip's shard is deleted only once a durable
// checkpoint covers every window of it, in every repeat pass. With the plan's
// chunk order (cache/plan.h) that is: the clip's chunk lies before the durable
// cursor's chunk (WindowSequence moves the cursor to the next chunk as soon as
// the last window of the last pass was handed out).
//
// Crash safety: release_after_checkpoint marks the clips committed, then
// unlinks, then marks them deleted; a kill in between leaves committed clips
// whose shards recovery deletes (or finds gone and marks deleted).
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cache/budget.h"
#include "cache/plan.h"
#include "state/ledger.h"

namespace kaio::cache {

class ShardRetention {
 public:
  explicit ShardRetention(state::Ledger& ledger) : ledger_(ledger) {}

  // Records which chunk the clips are trained in: wire it as the
  // WindowSequence's ChunkListener.
  void chunk_formed(int epoch, int64_t chunk_index, const std::vector<ClipWindows>& clips);
  // The trainer started on these clips.
  void consumed(const std::vector<state::ClipId>& clips);

  // Clips whose every window lies before `durable`.
  std::vector<state::ClipId> deletable_after(const PlanCursor& durable);
  // On-disk bytes (Budget accounting) a checkpoint taken at `position` would free.
  uint64_t freeable_bytes(const PlanCursor& position, const Budget& budget);

  struct Released {
    std::vector<state::ClipId> clips;
    uint64_t shard_bytes = 0;  // file sizes of the unlinked shards
  };
  // Call once the checkpoint at `durable` is durable. The caller then drops the
  // budget claims of the returned clips.
  Released release_after_checkpoint(const PlanCursor& durable);

 private:
  state::Ledger& ledger_;
};

// True when the next reservation does not fit now but a checkpoint would free
// space for it (clips trained past but not yet covered by a durable checkpoint):
// the daemon then checkpoints early instead of waiting.
bool should_checkpoint_early(const BudgetStatus& status, uint64_t next_reservation_on_disk, uint64_t freeable_on_disk);

}  // namespace kaio::cache
