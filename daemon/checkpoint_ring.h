#pragma once
// The checkpoint files kept on disk (train.keep_checkpoints of them) and the
// standing claims they are written into: one claim per kept file plus a
// spare, reserved at start-up, so that writing a checkpoint (which is what
// frees space) never waits for space. Start-up fills it; after that only the
// trainer thread touches it.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/io.h"
#include "state/ledger.h"

namespace kaio::daemon {

class CheckpointRing {
 public:
  using Reserve = std::function<std::unique_ptr<SpaceClaim>(uint64_t bytes, const std::string& what)>;

  CheckpointRing(state::Ledger& ledger, int keep) : ledger_(ledger), keep_(keep) {}

  // A checkpoint kept from the last run, oldest first.
  void adopt(const std::filesystem::path& file, std::unique_ptr<SpaceClaim> claim);
  void drop_over_keep();
  // The spare slot and the slots up to train.keep_checkpoints, `bytes` each.
  void reserve_standing(uint64_t bytes, const Reserve& reserve);
  // The new checkpoint takes the spare slot; the oldest file goes and its
  // slot becomes the spare.
  void rotate(const std::filesystem::path& written);

 private:
  state::Ledger& ledger_;
  int keep_;
  std::vector<std::pair<std::filesystem::path, std::unique_ptr<SpaceClaim>>> slots_;  // oldest first
  std::unique_ptr<SpaceClaim> spare_;
};

}  // namespace kaio::daemon
