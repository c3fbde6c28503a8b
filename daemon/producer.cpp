// Producer (producer.h): the producer thread's loop over epochs and files;
// it owns the captions and starts one FileRun per file run.
#include "daemon/producer.h"

#include <spdlog/spdlog.h>

#include <array>
#include <set>
#include <sstream>

#include "cache/resume.h"
#include "common/units.h"
#include "daemon/file_run.h"

namespace kaio::daemon {

void Producer::run(const std::stop_token& st) {
  core_.run_stage("producer", [&] {
    load_caption_files();
    while (!st.stop_requested()) {
      int e = core_.current_epoch();
      produce_epoch(e, st);
      std::unique_lock lock(core_.mutex);
      core_.changed.wait(lock, [&] { return st.stop_requested() || core_.done || core_.epoch != e; });
      if (core_.done) return;
    }
  });
}

// Caption files are read straight from the Hub into memory: they take no
// disk, and one that cannot be read leaves its clips without captions.
void Producer::load_caption_files() {
  const auto& source = core_.config.source;
  if (source.captions.empty()) return;
  constexpr uint64_t kMaxCaptionFile = 512ull << 20;
  for (const auto& f : core_.hub->list_files(source.repo, core_.commit_sha, source.captions, {})) {
    try {
      if (f.size > kMaxCaptionFile)
        throw Error(ErrorKind::corrupt,
                    "larger than " + format_size(kMaxCaptionFile) + " (" + format_size(f.size) + ")");
      auto stream = core_.hub->open_stream(source.repo, core_.commit_sha, f);
      std::string text;
      text.reserve(f.size);
      std::array<std::byte, 1 << 16> buf;
      while (size_t n = stream->read(buf)) text.append(reinterpret_cast<const char*>(buf.data()), n);
      std::istringstream in(text);
      auto parsed = decode::parse_captions(in, f.path);
      captions_.merge(std::move(parsed));
      spdlog::info("captions: {} read ({}), {} videos captioned in all", f.path, format_size(f.size), captions_.size());
    } catch (const Error& err) {
      if (err.kind() == ErrorKind::cancelled) throw;
      core_.fail("captions " + f.path + " not used: " + err.what(), err.kind());
    }
  }
}

void Producer::produce_epoch(int e, const std::stop_token& st) {
  auto order = cache::file_order(core_.config.train.seed, e, core_.files.size());
  std::vector<size_t> fed;
  {
    std::lock_guard lock(core_.mutex);
    fed = cache::feed_decoded_files(core_.ledger, e, order, *core_.sequence);
  }
  core_.changed.notify_all();
  std::set<size_t> skip(fed.begin(), fed.end());
  // source.partition: the other nodes' files count as complete and empty here.
  const auto& source = core_.config.source;
  std::set<size_t> others;
  for (size_t pos = 0; pos < order.size(); ++pos)
    if (static_cast<int>(pos % static_cast<size_t>(source.partition_count)) != source.partition_index)
      others.insert(pos);
  skip.insert(others.begin(), others.end());
  for (size_t pos = 0; pos < order.size() && !st.stop_requested(); ++pos) {
    if (others.count(pos)) {
      std::lock_guard lock(core_.mutex);
      core_.sequence->file_complete(pos);
    }
    if (skip.count(pos)) continue;
    core_.wait_while_paused(st);
    const auto& file = core_.files[order[pos]];
    auto status = core_.ledger.file_status(file.id, e);
    downloads_.prefetch_ahead(order, pos, e, skip);
    if (!(status && status->state == state::FileState::failed))
      while (!FileRun(core_, downloads_, captions_, file, pos, e, st).run()) core_.wait_for_disk_space(st);
    {
      std::lock_guard lock(core_.mutex);
      core_.sequence->file_complete(pos);
    }
    core_.changed.notify_all();
  }
  downloads_.drop_prefetches(e);
  if (st.stop_requested()) return;
  {
    std::lock_guard lock(core_.mutex);
    core_.sequence->finish_epoch();
  }
  core_.changed.notify_all();
}

}  // namespace kaio::daemon
