// CheckpointRing (checkpoint_ring.h): the kept checkpoint files and their
// standing claims; start-up fills it, then only the trainer thread rotates it.
#include "daemon/checkpoint_ring.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace kaio::daemon {
namespace fs = std::filesystem;

void CheckpointRing::adopt(const fs::path& file, std::unique_ptr<SpaceClaim> claim) {
  slots_.emplace_back(file, std::move(claim));
}

// A kill between a checkpoint's ledger row and the rotation leaves one
// checkpoint more than train.keep_checkpoints; the oldest go, so the
// standing claims are the ones the working-set check counted (a soak run
// sat in budget-wait beside three checkpoints with keep 2).
void CheckpointRing::drop_over_keep() {
  while (static_cast<int>(slots_.size()) > std::max(1, keep_)) {
    auto oldest = std::move(slots_.front());
    slots_.erase(slots_.begin());
    ledger_.remove_checkpoint(oldest.first);
    fs::remove(oldest.first);
    spdlog::info("checkpoint {} removed: more than train.keep_checkpoints ({}) were kept by the last run",
                 oldest.first.string(), keep_);
  }  // each claim goes after its unlink
}

void CheckpointRing::reserve_standing(uint64_t bytes, const Reserve& reserve) {
  spare_ = reserve(bytes, "spare checkpoint");
  while (static_cast<int>(slots_.size()) < keep_) slots_.emplace_back(fs::path(), reserve(bytes, "checkpoint"));
}

void CheckpointRing::rotate(const fs::path& written) {
  slots_.emplace_back(written, std::move(spare_));
  auto oldest = std::move(slots_.front());
  slots_.erase(slots_.begin());
  if (!oldest.first.empty() && oldest.first != written) {
    ledger_.remove_checkpoint(oldest.first);
    fs::remove(oldest.first);
  }
  spare_ = std::move(oldest.second);
}

}  // namespace kaio::daemon
