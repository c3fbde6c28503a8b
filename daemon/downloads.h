#pragma once
// Downloads: the prefetch queue (files after the one being decoded, started
// early in plan order) and the downloads a killed run left on disk. Both sit
// under their own lock, `prefetch_mutex_`, which may be held while taking the
// core's `mutex`, never the reverse. The producer thread fills and takes from
// the queue; the trainer thread gives entries back when decoding needs their
// space; start-up gives kept downloads back when the standing claims need it.
#include <cstddef>
#include <deque>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <stop_token>
#include <vector>

#include "daemon/engine_core.h"

namespace kaio::daemon {

class Downloads {
 public:
  // A download started ahead of its file's turn, into its own claim.
  struct Prefetch {
    size_t pos = 0;
    int epoch = 0;
    const state::FileRecord* file = nullptr;
    std::filesystem::path local;
    std::unique_ptr<SpaceClaim> claim;
    std::shared_future<fetch::DownloadResult> done;
  };
  // What a file's turn finds on disk from the last run: a verified download
  // (`complete`) or a `.part` to resume, each adopted into `claim`.
  struct Kept {
    std::unique_ptr<SpaceClaim> claim;
    bool complete = false;
  };

  explicit Downloads(EngineCore& core) : core_(core) {}

  void find_kept();  // at start: what the last run left in downloads/
  void prefetch_ahead(const std::vector<size_t>& order, size_t pos, int e, const std::set<size_t>& skip);
  std::optional<Prefetch> take_prefetch(size_t pos);
  // Takes `local` and its .part out of the kept set; one that no longer `fits`
  // (a file now streamed) is removed.
  Kept take_kept(const std::filesystem::path& local, bool fits);
  std::shared_future<fetch::DownloadResult> submit(const state::FileRecord& file, const std::filesystem::path& local);
  // Waits for a download; a stop cancels it and keeps its .part.
  fetch::DownloadResult wait(const std::shared_future<fetch::DownloadResult>& done, const std::stop_token& st);
  bool evict_prefetch(int e);
  bool give_back_kept(int e);
  void drop_prefetches(int e);

 private:
  bool give_back_kept_locked(int e);
  uint64_t discard_kept(const std::filesystem::path& file);

  EngineCore& core_;
  std::mutex prefetch_mutex_;
  std::deque<Prefetch> prefetched_;
  std::set<std::filesystem::path> kept_;  // found at start, in the baseline until adopted or given back
};

}  // namespace kaio::daemon
