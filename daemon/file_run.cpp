// FileRun (file_run.h): one file's fetch, decode and clips on the producer
// thread; its download claim and local path live and die with the run.
#include "daemon/file_run.h"

#include <spdlog/spdlog.h>

#include "cache/resume.h"
#include "common/log.h"
#include "common/units.h"
#include "decode/file_source.h"

namespace kaio::daemon {
namespace fs = std::filesystem;

// A full filesystem (ENOSPC below the budget: something else filled it) is
// not the file's fault: its download and shards are given back, kaiod shows
// disk-full, waits for space and does the file again. Clips it already
// delivered stay planned once (on_clip).
bool FileRun::run() {
  bool done = true;
  try {
    decode_verified();
  } catch (const Error& err) {
    if (err.kind() == ErrorKind::cancelled) throw;
    if (err.kind() == ErrorKind::budget) throw;  // cannot ever fit: the operator must act
    if (err.kind() == ErrorKind::disk_full) {
      core_.disk_full("file " + file_.path + ": " + err.what());
      // Done again from the start; members already planned are skipped.
      enter(state::FileState::pending, "disk full; retried once space returns");
      done = false;
    } else {
      enter(state::FileState::failed, err.what());
      core_.fail("file " + printable(file_.path) + " failed: " + printable(err.what()), err.kind());
    }
  }
  release_download();
  return done;
}

std::unique_ptr<ByteSource> FileRun::open() {
  local_ = core_.download_dir / file_.id;
  if (auto ahead = downloads_.take_prefetch(pos_)) {
    claim_ = std::move(ahead->claim);
    return downloaded(ahead->done);
  }
  uint64_t threshold = core_.download_limit();
  auto kept = downloads_.take_kept(local_, file_.size <= threshold);
  claim_ = std::move(kept.claim);
  if (kept.complete) {
    enter(state::FileState::downloaded);
    return std::make_unique<decode::FileSource>(local_);
  }
  if (file_.size > threshold) {
    local_.clear();
    spdlog::info("streaming {} ({}) through decode: larger than {}", file_.path, format_size(file_.size),
                 format_size(threshold));
    return core_.hub->open_stream(core_.config.source.repo, core_.commit_sha,
                                  {file_.path, file_.size, file_.git_oid, file_.sha256});
  }
  if (claim_)
    claim_->resize(file_.size);
  else
    claim_ = core_.budget->reserve(file_.size, "download " + file_.path);
  core_.ledger.set_file_local_path(file_.id, epoch_, local_);
  enter(state::FileState::downloading);
  return downloaded(downloads_.submit(file_, local_));
}

std::unique_ptr<ByteSource> FileRun::downloaded(const std::shared_future<fetch::DownloadResult>& done) {
  auto r = downloads_.wait(done, st_);
  if (!r.ok) throw Error(r.kind, r.message);
  enter(state::FileState::downloaded);
  core_.ledger.add_counter("bytes_downloaded", static_cast<int64_t>(file_.size));
  return std::make_unique<decode::FileSource>(r.job.dest);
}

// A streamed file is verified (size, hash) only at its end, after its clips
// were decoded. A mismatch there is most likely a byte changed on the way, so
// the file is streamed and decoded once more; the clips the first pass
// delivered stay planned (they may carry that byte) and are not decoded
// again. A second mismatch fails the file.
void FileRun::decode_verified() {
  try {
    decode(open());
  } catch (const Error& err) {
    if (err.kind() != ErrorKind::corrupt || !local_.empty() || st_.stop_requested()) throw;
    spdlog::warn("stream {} failed its check after decoding: {}; streaming it once more", file_.path, err.what());
    enter(state::FileState::pending, std::string("streamed again: ") + err.what());
    decode(open());
  }
}

void FileRun::decode(std::unique_ptr<ByteSource> source) {
  enter(state::FileState::extracting);
  DecodeConfig decode_config;
  {
    std::lock_guard lock(core_.mutex);  // reload() changes the workers
    decode_config = core_.config.decode;
  }
  decode::ArchiveDecoder decoder(decode_config, core_.work_dir, *core_.budget);
  decoder.skip_planned([&](const std::string& member) { return pinned_in_plan(member); });
  // A clip that cannot fit beside what stays while it decodes fails alone.
  uint64_t download = claim_ ? core_.budget->on_disk_bytes(claim_->bytes()) : 0;
  decoder.set_shard_limits({core_.clip_limit(download), std::chrono::seconds(10)});
  decoder.run(
      std::move(source), file_.path, captions_.size() ? &captions_ : nullptr,
      [&](decode::ClipResult r) { on_clip(std::move(r)); }, st_);
  enter(state::FileState::decoded);
  spdlog::info("decoded {} ({})", file_.path, format_size(file_.size));
}

// True when the member's clip is in this epoch's plan already: delivered in
// this process (a retry after disk full), or pinned in the ledger by an
// earlier run (trained and deleted, or its shard still on disk). Such a
// member is not decoded again, so its windows never change with a decode's
// outcome (a timeout under load, say).
bool FileRun::pinned_in_plan(const std::string& member) {
  auto id = state::clip_id(core_.config.source.repo, file_.path, member);
  {
    std::lock_guard lock(core_.mutex);
    if (core_.planned.count(id)) return true;
  }
  auto known = core_.ledger.clip(id);
  if (!known || known->state == state::ClipState::failed || known->windows <= 0 || !cache::planned_in(*known, epoch_))
    return false;
  if (known->state == state::ClipState::committed || known->state == state::ClipState::deleted) return true;
  std::lock_guard lock(core_.mutex);
  return core_.shard_paths.count(id) > 0;
}

void FileRun::on_clip(decode::ClipResult r) {
  core_.wait_while_paused(st_);
  auto id = state::clip_id(core_.config.source.repo, file_.path, r.member);
  if (r.planned) return plan_again(id);
  state::ClipRecord rec;
  rec.file_id = file_.id;
  rec.repo_path = file_.path;
  rec.member = r.member;
  rec.member_index = r.index;
  rec.caption = r.caption;
  rec.windows = r.windows;
  rec.shard_path = r.shard;
  rec.shard_bytes = r.shard_bytes;
  rec.id = id;
  if (!r.error.empty() || r.windows == 0) {
    rec.state = state::ClipState::failed;
    rec.reason = r.error.empty() ? "no windows" : r.error;
    core_.ledger.add_clips(core_.config.source.repo, {rec});
    if (!r.error.empty()) {
      std::lock_guard lock(core_.mutex);
      ++core_.errors_total[std::string(to_string(ErrorKind::corrupt))];
    }
    spdlog::warn("clip {} in {} skipped: {}", printable(r.member), printable(file_.path), printable(rec.reason));
    return;
  }
  core_.ledger.add_clips(core_.config.source.repo, {rec});
  core_.ledger.add_counter("clips_decoded", 1);
  {
    std::lock_guard lock(core_.mutex);
    core_.shard_claims[rec.id] = std::move(r.claim);
    core_.shard_paths[rec.id] = r.shard;
    core_.sequence->add_clip({rec.id, rec.windows, pos_, rec.shard_bytes});
    core_.planned.insert(rec.id);
    core_.decoded_clips += 1;
  }
  core_.changed.notify_all();
}

// A member the decoder skipped (pinned_in_plan) joins the sequence again
// from its ledger row, once per epoch.
void FileRun::plan_again(const std::string& id) {
  std::lock_guard lock(core_.mutex);
  if (core_.planned.count(id)) return;  // delivered before this retry of its file
  auto known = core_.ledger.clip(id);
  if (!known)
    throw Error(ErrorKind::internal, "clip " + id + " of " + file_.path + " is planned but not in the ledger");
  core_.sequence->add_clip({id, known->windows, pos_, known->shard_bytes});
  core_.planned.insert(id);
}

void FileRun::enter(state::FileState state, const std::string& reason) {
  core_.ledger.set_file_state(file_.id, epoch_, state, reason);
}

// A failed download's bytes leave with its claim: unlink first, then give
// the bytes back.
void FileRun::release_download() {
  if (local_.empty()) return;
  fs::remove(local_.string() + ".part");
  fs::remove(local_);
  claim_.reset();
}

}  // namespace kaio::daemon
