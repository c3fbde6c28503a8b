#pragma once
// The decode stage the daemon runs on each archive: stream it, extract each
// matching member, decode it into a shard on a bounded pool of workers, and
// hand every result over in archive order.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>

#include "common/config.h"
#include "common/io.h"
#include "decode/archive.h"
#include "decode/captions.h"
#include "decode/video.h"

namespace kaio::decode {

struct ClipResult {
  std::string source_file;      // the archive in the repo
  std::string member;           // the member inside it
  std::string clip_id;          // member_id(source_file, member); names the shard
  std::filesystem::path shard;  // empty when there is no shard
  int windows = 0;
  uint64_t shard_bytes = 0;
  std::unique_ptr<kaio::SpaceClaim> claim;  // holds the shard's bytes; now the caller's
  std::string caption;
  std::string error;     // empty when ok; else why there is no shard
  int index = 0;         // position of the member in archive order (rejected ones included)
  bool planned = false;  // already in the plan: not decoded again, nothing else set
};

// After a crash: removes what a run leaves in work_dir only while it runs
// (extracted members "<clip_id>.mp4" and "*.tmp" files), keeping finished
// shards. Returns the number of files removed.
int remove_stale_temporaries(const std::filesystem::path& work_dir);

// How far a clip's shard may grow past the claim its container's duration
// gave it (a container may declare 1 s, or nothing, and hold an hour).
struct ShardLimits {
  // The most one clip may hold on disk, its member and its shard together
  // (and its shard alone as it grows); a clip that needs more fails at once,
  // naming the sizes, before its member is extracted when the archive gives
  // the member's size. 0: only what the reserver can ever hold (Error(budget)
  // from try_reserve). The engine passes what the budget leaves beside what
  // stays on disk while the clip decodes (EngineCore::clip_limit).
  uint64_t max_bytes = 0;
  // Growth never queues: it takes room that is free now (try_reserve), and
  // when none comes for this long the clip fails rather than hold its member
  // and partial shard while others wait for that space.
  std::chrono::milliseconds grow_wait{10'000};
};

class ArchiveDecoder {
 public:
  // Temporaries (extracted members) and shards go to work_dir.
  ArchiveDecoder(const kaio::DecodeConfig& config, std::filesystem::path work_dir, kaio::SpaceReserver& reserver);
  void set_shard_limits(const ShardLimits& limits) { shard_limits_ = limits; }

  // Returns once every member is delivered. One member's failure is delivered
  // as a ClipResult with an error and the archive goes on; a broken stream or
  // a bomb throws after delivering every member before it. A stop request
  // throws Error(cancelled) and drops results not yet delivered (their shards
  // are removed). on_clip runs on a worker thread (or, for a member that
  // failed before decoding, the calling thread), one call at a time.
  void run(std::unique_ptr<kaio::ByteSource> archive, const std::string& source_file, const CaptionMap* captions,
           std::function<void(ClipResult)> on_clip, const std::stop_token& stop);

  // Members for which `planned(member)` is true are not extracted nor decoded:
  // they are delivered in their place with `planned` set. A retry of a file
  // (after disk full, after a restart) must not decode again, and so replace
  // or remove, a shard the trainer may be reading.
  void skip_planned(std::function<bool(const std::string& member)> planned) { planned_ = std::move(planned); }

 private:
  std::string too_large_to_extract(const Member& m, const std::string& source_file) const;

  WindowSpec spec_;
  ArchiveLimits limits_;
  int workers_;
  int codec_threads_;
  std::chrono::milliseconds timeout_;
  std::filesystem::path work_dir_;
  kaio::SpaceReserver& reserver_;
  std::function<bool(const std::string&)> planned_;
  ShardLimits shard_limits_;
};

}  // namespace kaio::decode
