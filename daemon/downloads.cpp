// Downloads (downloads.h): the prefetch queue and the downloads kept from
// the last run, under prefetch_mutex_; the producer thread fills and takes,
// the trainer thread and start-up give back.
#include "daemon/downloads.h"

#include <spdlog/spdlog.h>

#include "common/units.h"

namespace kaio::daemon {
namespace fs = std::filesystem;

void Downloads::find_kept() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(core_.download_dir, ec)) kept_.insert(entry.path());
}

// Starts downloads of the files after `pos` in plan order while they fit, up
// to fetch.parallel_files of them, so the network works while this file is
// decoded. They only take space that is free now and leaves download_limit()
// for the file being decoded; when decoding still runs short, the trainer
// gives the newest back (evict_prefetch). Files with a .part from an earlier
// run are left to their FileRun, which resumes them.
void Downloads::prefetch_ahead(const std::vector<size_t>& order, size_t pos, int e, const std::set<size_t>& skip) {
  size_t depth;
  {
    std::lock_guard lock(core_.mutex);  // reload() changes it
    depth = static_cast<size_t>(std::max(0, core_.config.fetch.parallel_files));
  }
  uint64_t limit = core_.download_limit();
  std::lock_guard lock(prefetch_mutex_);
  size_t next = prefetched_.empty() ? pos + 1 : prefetched_.back().pos + 1;
  for (; next < order.size() && prefetched_.size() < depth; ++next) {
    if (core_.paused_now()) return;
    if (skip.count(next)) continue;
    const auto& file = core_.files[order[next]];
    if (file.size > limit) continue;  // streamed when its turn comes
    auto status = core_.ledger.file_status(file.id, e);
    if (status && status->state != state::FileState::pending) continue;
    fs::path local = core_.download_dir / file.id;
    if (fs::exists(local) || fs::exists(local.string() + ".part")) continue;
    auto claim = core_.budget->try_reserve(file.size + limit, "prefetch " + file.path);
    if (!claim) return;  // in plan order: a later file does not jump the queue
    claim->resize(file.size);
    core_.ledger.set_file_local_path(file.id, e, local);
    core_.ledger.set_file_state(file.id, e, state::FileState::downloading);
    prefetched_.push_back({next, e, &file, local, std::move(claim), submit(file, local)});
  }
}

std::optional<Downloads::Prefetch> Downloads::take_prefetch(size_t pos) {
  std::lock_guard lock(prefetch_mutex_);
  while (!prefetched_.empty() && prefetched_.front().pos < pos) prefetched_.pop_front();  // skipped since
  if (prefetched_.empty() || prefetched_.front().pos != pos) return std::nullopt;
  Prefetch p = std::move(prefetched_.front());
  prefetched_.pop_front();
  return p;
}

Downloads::Kept Downloads::take_kept(const fs::path& local, bool fits) {
  fs::path part = local;
  part += ".part";
  Kept kept;
  std::lock_guard lock(prefetch_mutex_);  // against give_back_kept
  kept_.erase(local);
  kept_.erase(part);
  if (!fits) {
    // Kept by a run whose budget let it download whole: no longer fits.
    for (const auto& file : {local, part})
      if (fs::exists(file)) discard_kept(file);
  } else if (fs::exists(local)) {
    // The downloader renames to `local` only after checking size and hash, so
    // this was verified before a restart (a prefetch, or a crash before the
    // ledger heard of it); recovery kept it.
    kept.claim = core_.budget->adopt_existing(local);
    kept.complete = true;
  } else if (fs::exists(part)) {
    // Bytes kept from before a restart are already on disk: they join this
    // download's claim instead of being reserved a second time.
    kept.claim = core_.budget->adopt_existing(part);
  }
  return kept;
}

std::shared_future<fetch::DownloadResult> Downloads::submit(const state::FileRecord& file, const fs::path& local) {
  auto result = std::make_shared<std::promise<fetch::DownloadResult>>();
  std::shared_future<fetch::DownloadResult> done = result->get_future().share();
  core_.downloader->submit(
      {core_.config.source.repo, core_.commit_sha, {file.path, file.size, file.git_oid, file.sha256}, local},
      [result](const fetch::DownloadResult& r) { result->set_value(r); });
  return done;
}

fetch::DownloadResult Downloads::wait(const std::shared_future<fetch::DownloadResult>& done,
                                      const std::stop_token& st) {
  while (done.wait_for(std::chrono::milliseconds(200)) != std::future_status::ready)
    if (st.stop_requested()) {
      core_.downloader->stop();  // keeps the .part for the next run
      done.wait();
      throw Error(ErrorKind::cancelled, "stopping");
    }
  return done.get();
}

// Gives back the newest prefetched download: its .part or file is removed
// and the file is downloaded again when its turn comes. Returns false when
// there is none.
bool Downloads::evict_prefetch(int e) {
  std::unique_lock lock(prefetch_mutex_);
  if (prefetched_.empty()) return give_back_kept_locked(e);
  Prefetch p = std::move(prefetched_.back());
  prefetched_.pop_back();
  lock.unlock();
  core_.downloader->cancel(p.local);
  p.done.wait();
  std::error_code ec;
  fs::remove(p.local, ec);
  fs::remove(p.local.string() + ".part", ec);
  p.claim.reset();  // after the unlink
  core_.ledger.set_file_state(p.file->id, p.epoch, state::FileState::pending);
  spdlog::info("prefetch of {} given back ({}): decoding needs the space", p.file->path, format_size(p.file->size));
  return true;
}

bool Downloads::give_back_kept(int e) {
  std::lock_guard lock(prefetch_mutex_);
  return give_back_kept_locked(e);
}

// A download that a killed run had started or finished ahead of its turn is
// kept on disk for its file, outside any prefetch claim. When the working set
// needs the space (the last run may have had more room, before a checkpoint
// or a kept shard took it) it is given back like a prefetch. take_kept takes
// its file's own out of the set first.
bool Downloads::give_back_kept_locked(int e) {
  if (kept_.empty()) return false;
  fs::path kept = *kept_.begin();
  uint64_t bytes = discard_kept(kept);
  std::string id = kept.stem().string();  // "<id>" of "<id>" or "<id>.part"
  // The download belongs to whichever of this epoch and the next has its
  // file in flight; a file decoded (or failed) in an epoch stays so.
  for (int ep : {e, e + 1}) {
    auto status = core_.ledger.file_status(id, ep);
    if (status && (status->state == state::FileState::downloading || status->state == state::FileState::downloaded))
      core_.ledger.set_file_state(id, ep, state::FileState::pending);
  }
  spdlog::info("download {} kept from the last run given back ({}): the working set needs the space", kept.string(),
               format_size(bytes));
  return true;
}

// Removes a file kept on disk from the last run; its bytes leave the budget's
// baseline once it is unlinked. Called with prefetch_mutex_ held.
uint64_t Downloads::discard_kept(const fs::path& file) {
  kept_.erase(file);
  auto claim = core_.budget->adopt_existing(file);
  uint64_t bytes = claim->bytes();
  std::error_code ec;
  fs::remove(file, ec);
  return bytes;  // the claim goes after the unlink
}

// At an epoch's end: prefetches of its files are not needed any more.
// Downloads kept from the last run may be the next epoch's: they stay.
void Downloads::drop_prefetches(int e) {
  while (true) {
    {
      std::lock_guard lock(prefetch_mutex_);
      if (prefetched_.empty()) return;
    }
    evict_prefetch(e);
  }
}

}  // namespace kaio::daemon
