#include "cache/resume.h"

#include "common/error.h"
#include "common/log.h"

namespace kaio::cache {

bool planned_in(const state::ClipRecord& clip, int epoch) {
  if (clip.plan_epoch) return *clip.plan_epoch == epoch;
  // Not in a chunk yet: delivered in the epoch being decoded. Every clip of an
  // earlier epoch was put in a chunk before that epoch ended.
  return clip.state == state::ClipState::ready || clip.state == state::ClipState::consumed;
}

std::vector<size_t> feed_decoded_files(state::Ledger& ledger, int epoch, const std::vector<size_t>& order,
                                       WindowSequence& sequence) {
  using state::ClipState;
  using state::FileState;
  auto files = ledger.files();
  if (order.size() != files.size())
    throw Error(ErrorKind::internal, "plan: file order has " + std::to_string(order.size()) +
                                         " entries but the ledger lists " + std::to_string(files.size()) + " files");
  std::vector<size_t> fed;
  size_t clips = 0;
  for (size_t pos = 0; pos < order.size(); ++pos) {
    const auto& file = files[order[pos]];
    auto status = ledger.file_status(file.id, epoch);
    if (!status) continue;
    bool decoded = status->state == FileState::decoded || status->state == FileState::done;
    if (!decoded && status->state != FileState::failed) continue;
    for (const auto& c : ledger.clips_of_file(file.id)) {
      if (c.state == ClipState::failed || c.windows <= 0) continue;
      // A file that failed part-way keeps the clips it delivered in the plan,
      // as the uninterrupted run did; its other rows are from earlier epochs.
      if (!decoded && !planned_in(c, epoch)) continue;
      sequence.add_clip({c.id, c.windows, pos, c.shard_bytes});
      ++clips;
    }
    sequence.file_complete(pos);
    fed.push_back(pos);
  }
  spdlog::info("plan: resumed epoch {} with {} decoded or failed files ({} clips) from the ledger", epoch, fed.size(),
               clips);
  return fed;
}

}  // namespace kaio::cache
