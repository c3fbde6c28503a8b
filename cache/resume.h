#pragma once
// Start-up glue between the ledger and the plan: after a restart the window
// sequence must see the epoch's clips again from its start (it skips the chunks
// already trained), including clips whose shards were deleted long ago. The
// ledger still holds their ids and window counts.
#include <cstddef>
#include <vector>

#include "cache/plan.h"
#include "state/ledger.h"

namespace kaio::cache {

// True when the ledger row says the clip entered the plan of `epoch`: plan
// membership is read back from the ledger, never recomputed by decoding again.
bool planned_in(const state::ClipRecord& clip, int epoch);

// Feeds `sequence` the clips of every file the ledger has decoded (or done) in
// `epoch`, and the clips that files which failed part-way delivered before
// failing, walking plan positions in order, and marks those files complete.
// `order` is file_order(seed, epoch, files.size()) over ledger.files(). Clips
// that failed are left out, as they were the first time. Returns the plan
// positions fed; the daemon fetches and decodes the others.
std::vector<size_t> feed_decoded_files(state::Ledger& ledger, int epoch, const std::vector<size_t>& order,
                                       WindowSequence& sequence);

}  // namespace kaio::cache
