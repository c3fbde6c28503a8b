#pragma once
// One run of one file through the pipeline, on the producer thread: fetch
// (a prefetch, a download kept from the last run, a new download, or a
// stream), decode, and hand each clip to the window sequence. It owns the
// file's download claim and local path for the run, and it is the one place
// that moves the file's ledger state (downloading, downloaded, extracting,
// decoded, failed, or back to pending after a full disk). A run that meets a
// full disk returns false; the producer waits for space and starts a new run.
#include <cstddef>
#include <filesystem>
#include <future>
#include <memory>
#include <stop_token>
#include <string>
#include <utility>

#include "daemon/downloads.h"
#include "daemon/engine_core.h"
#include "decode/captions.h"
#include "decode/pipeline.h"

namespace kaio::daemon {

class FileRun {
 public:
  FileRun(EngineCore& core, Downloads& downloads, const decode::CaptionMap& captions, const state::FileRecord& file,
          size_t pos, int epoch, std::stop_token st)
      : core_(core),
        downloads_(downloads),
        captions_(captions),
        file_(file),
        pos_(pos),
        epoch_(epoch),
        st_(std::move(st)) {}

  // True when the file is done with (decoded, or failed alone); false when
  // a full disk interrupted it and it must run again once space returns.
  bool run();

 private:
  std::unique_ptr<ByteSource> open();
  std::unique_ptr<ByteSource> downloaded(const std::shared_future<fetch::DownloadResult>& done);
  void decode_verified();
  void decode(std::unique_ptr<ByteSource> source);
  bool pinned_in_plan(const std::string& member);
  void on_clip(decode::ClipResult r);
  void plan_again(const std::string& id);
  void enter(state::FileState state, const std::string& reason = "");
  void release_download();

  EngineCore& core_;
  Downloads& downloads_;
  const decode::CaptionMap& captions_;
  const state::FileRecord& file_;
  const size_t pos_;
  const int epoch_;
  std::stop_token st_;
  std::unique_ptr<SpaceClaim> claim_;  // the download's
  std::filesystem::path local_;        // the download's; empty when streamed
};

}  // namespace kaio::daemon
