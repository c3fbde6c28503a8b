#include "cache/retention.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "common/units.h"

namespace kaio::cache {

void ShardRetention::chunk_formed(int epoch, int64_t chunk_index, const std::vector<ClipWindows>& clips) {
  std::vector<state::ClipId> ids;
  for (const auto& c : clips) ids.push_back(c.clip);
  ledger_.assign_chunk(ids, epoch, chunk_index);
}

void ShardRetention::consumed(const std::vector<state::ClipId>& clips) {
  ledger_.set_clips_state(clips, state::ClipState::consumed);
}

std::vector<state::ClipId> ShardRetention::deletable_after(const PlanCursor& durable) {
  std::vector<state::ClipId> ids;
  for (const auto& c : ledger_.clips_before(durable.epoch, durable.chunk_index)) ids.push_back(c.id);
  return ids;
}

uint64_t ShardRetention::freeable_bytes(const PlanCursor& position, const Budget& budget) {
  uint64_t total = 0;
  for (const auto& c : ledger_.clips_before(position.epoch, position.chunk_index))
    total += budget.on_disk_bytes(c.shard_bytes);
  return total;
}

ShardRetention::Released ShardRetention::release_after_checkpoint(const PlanCursor& durable) {
  Released out;
  auto clips = ledger_.clips_before(durable.epoch, durable.chunk_index);
  if (clips.empty()) return out;
  for (const auto& c : clips) out.clips.push_back(c.id);
  ledger_.set_clips_state(out.clips, state::ClipState::committed);
  for (const auto& c : clips) {
    if (std::remove(c.shard_path.c_str()) == 0) {
      out.shard_bytes += c.shard_bytes;
    } else if (errno != ENOENT) {
      throw_errno("delete shard of clip " + c.id, c.shard_path.string());
    }
  }
  ledger_.set_clips_state(out.clips, state::ClipState::deleted, "covered by checkpoint at " + durable.to_string());
  spdlog::info("retention: deleted {} shards ({}) covered by the checkpoint at {}", out.clips.size(),
               format_size(out.shard_bytes), durable.to_string());
  return out;
}

bool should_checkpoint_early(const BudgetStatus& status, uint64_t next_reservation_on_disk, uint64_t freeable_on_disk) {
  return status.available < next_reservation_on_disk && freeable_on_disk > 0;
}

}  // namespace kaio::cache
