#include "cache/resume.h"

#include "common/error.h"
#include "common/log.h"

namespace kaio::cache {

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
    if (!status || (status->state != FileState::decoded && status->state != FileState::done)) continue;
    for (const auto& c : ledger.clips_of_file(file.id)) {
      if (c.state == ClipState::failed || c.windows <= 0) continue;
      sequence.add_clip({c.id, c.windows, pos});
      ++clips;
    }
    sequence.file_complete(pos);
    fed.push_back(pos);
  }
  spdlog::info("plan: resumed epoch {} with {} decoded files ({} clips) from the ledger", epoch, fed.size(), clips);
  return fed;
}

}  // namespace kaio::cache
