#include "decode/pipeline.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "decode/shard.h"

namespace kaio::decode {
namespace {

// What to hold for a member whose header does not give its size (streamed
// zip); the claim grows while extracting if the member is larger.
constexpr uint64_t kUnknownMemberReserve = 64 * 1024 * 1024;

struct Job {
  int index = 0;
  std::string member;
  std::string clip_id;
  std::string caption;
  std::filesystem::path temp;
  std::unique_ptr<kaio::SpaceClaim> member_claim;
};

// One run(): the job queue, the workers, and in-order delivery.
class Run {
 public:
  Run(const WindowSpec& spec, int workers, int codec_threads,
      std::chrono::milliseconds timeout, const std::filesystem::path& work_dir, kaio::SpaceReserver& reserver,
      std::string source_file, std::function<void(ClipResult)> on_clip, std::stop_token outer)
      : spec_(spec),
        codec_threads_(codec_threads),
        timeout_(timeout),
        work_dir_(work_dir),
        reserver_(reserver),
        source_file_(std::move(source_file)),
        on_clip_(std::move(on_clip)),
        forward_stop_(outer, [this] { stop_.request_stop(); }),
        max_undelivered_(2 * workers + 1) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }

  ~Run() { close_and_join(); }

  std::stop_token stop() const { return stop_.get_token(); }

  // Waits until fewer than max_undelivered_ members are in flight, so disk,
  // memory and the reorder buffer stay bounded.
  void wait_for_room() {
    std::unique_lock lock(mu_);
    room_.wait(lock, stop(), [&] { return next_index_ - delivered_ < max_undelivered_; });
    if (stop_.stop_requested()) throw Error(ErrorKind::cancelled, "decode of " + source_file_ + " cancelled");
  }

  int take_index() { return next_index_++; }

  // A member extracted ahead must neither queue in front of the shard
  // reservations of members already extracted (reservations are first come
  // first served, so it would wait for space only their delivery frees, and
  // they for it) nor take the space their shards need. So while others are in
  // flight it takes space only if a shard's worth per member in flight stays
  // free beside it; once none is, it queues like any reservation.
  std::unique_ptr<kaio::SpaceClaim> reserve_member(uint64_t bytes, const std::string& what) {
    while (true) {
      std::unique_lock lock(mu_);
      int others = next_index_ - delivered_ - 1;
      if (others <= 0) break;
      uint64_t shard = shard_estimate_ ? shard_estimate_ : bytes;
      lock.unlock();
      if (auto claim = reserver_.try_reserve(bytes + shard * static_cast<uint64_t>(others + 1), what)) {
        claim->resize(bytes);
        return claim;
      }
      lock.lock();
      room_.wait_for(lock, stop(), std::chrono::milliseconds(50), [&] { return next_index_ - delivered_ - 1 < others; });
      if (stop_.stop_requested()) throw Error(ErrorKind::cancelled, "decode of " + source_file_ + " cancelled");
    }
    return reserver_.reserve(bytes, what);
  }

  void submit(Job job) {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
    work_ready_.notify_one();
  }

  void skip_planned_member(int index, const std::string& member) {
    ClipResult r;
    r.source_file = source_file_;
    r.member = member;
    r.clip_id = member_id(source_file_, member);
    r.index = index;
    r.planned = true;
    deliver(std::move(r));
  }

  void fail_member(int index, const std::string& member, const std::string& error) {
    spdlog::warn("decode {}: member {} failed: {}", source_file_, printable(member), error);
    ClipResult r;
    r.source_file = source_file_;
    r.member = member;
    r.clip_id = member_id(source_file_, member);
    r.error = error;
    r.index = index;
    deliver(std::move(r));
  }

  // Drains the queue, joins the workers, rethrows a callback's exception.
  void finish() {
    close_and_join();
    if (callback_error_) std::rethrow_exception(std::exchange(callback_error_, nullptr));
  }

 private:
  void close_and_join() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
      work_ready_.notify_all();
    }
    threads_.clear();
  }

  void work() {
    while (true) {
      Job job;
      {
        std::unique_lock lock(mu_);
        work_ready_.wait(lock, [&] { return closed_ || !jobs_.empty(); });
        if (jobs_.empty()) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      deliver(process(job));
    }
  }

  ClipResult process(Job& job) {
    ClipResult r;
    r.source_file = source_file_;
    r.member = job.member;
    r.clip_id = job.clip_id;
    r.caption = job.caption;
    r.index = job.index;
    try {
      auto probe = probe_clip(job.temp, spec_);
      size_t meta = source_file_.size() + job.member.size() + job.caption.size();
      uint64_t bytes = shard_bytes(spec_, probe.expected_windows + 1, meta);
      {
        std::lock_guard lock(mu_);
        shard_estimate_ = std::max(shard_estimate_, bytes);
      }
      auto claim = reserver_.reserve(bytes, "decode " + job.member);
      auto shard = work_dir_ / (job.clip_id + ".shard");
      DecodeOptions opts{codec_threads_, timeout_, stop()};
      auto summary = decode_clip(job.temp, ClipOrigin{source_file_, job.member, job.caption}, spec_, shard, opts);
      if (summary.windows == 0) {
        r.error = summary.skipped_reason;
      } else {
        claim->resize(summary.bytes);
        r.shard = shard;
        r.windows = summary.windows;
        r.shard_bytes = summary.bytes;
        r.claim = std::move(claim);
      }
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::disk_full) {
        // Not the member's fault: the whole archive is retried once space returns.
        abort_run(std::current_exception());
        r.error = e.what();
        std::error_code ec;
        std::filesystem::remove(job.temp, ec);
        std::filesystem::remove(work_dir_ / (job.clip_id + ".shard"), ec);
        job.member_claim.reset();
        return r;
      }
      r.error = e.what();
      if (r.error.find(printable(job.member)) == std::string::npos) {
        r.error = "member " + printable(job.member) + " of " + source_file_ + ": " + r.error;
      }
      spdlog::warn("decode {}: member {} failed: {}", source_file_, printable(job.member), r.error);
    }
    std::error_code ec;
    std::filesystem::remove(job.temp, ec);
    job.member_claim.reset();
    return r;
  }

  // Parks a result and hands over every result that is next in order.
  void deliver(ClipResult result) {
    std::lock_guard order(deliver_mu_);
    std::vector<ClipResult> ready;
    {
      std::lock_guard lock(mu_);
      parked_.emplace(result.index, std::move(result));
      while (!parked_.empty() && parked_.begin()->first == delivered_) {
        ready.push_back(std::move(parked_.begin()->second));
        parked_.erase(parked_.begin());
        ++delivered_;
      }
      room_.notify_all();
    }
    for (auto& r : ready) hand_over(std::move(r));
  }

  void hand_over(ClipResult r) {
    if (stop_.stop_requested()) {
      discard(r);
      return;
    }
    try {
      on_clip_(std::move(r));
    } catch (...) {
      abort_run(std::current_exception());
    }
  }

  // Stops the run; finish() rethrows the first such error.
  void abort_run(std::exception_ptr error) {
    std::lock_guard lock(mu_);
    if (!callback_error_) callback_error_ = error;
    stop_.request_stop();
  }

  static void discard(const ClipResult& r) {
    if (r.shard.empty()) return;
    std::error_code ec;
    std::filesystem::remove(r.shard, ec);
  }

  const WindowSpec& spec_;
  int codec_threads_;
  std::chrono::milliseconds timeout_;
  const std::filesystem::path& work_dir_;
  kaio::SpaceReserver& reserver_;
  std::string source_file_;
  std::function<void(ClipResult)> on_clip_;
  std::stop_source stop_;
  std::stop_callback<std::function<void()>> forward_stop_;
  const int max_undelivered_;

  std::mutex mu_;
  std::condition_variable work_ready_;
  std::condition_variable_any room_;
  std::deque<Job> jobs_;
  bool closed_ = false;
  int next_index_ = 0;
  int delivered_ = 0;
  uint64_t shard_estimate_ = 0;  // the largest shard reserved so far in this archive
  std::map<int, ClipResult> parked_;
  std::exception_ptr callback_error_;
  std::mutex deliver_mu_;
  std::vector<std::jthread> threads_;  // last: joined before the rest is destroyed
};

}  // namespace

int remove_stale_temporaries(const std::filesystem::path& work_dir) {
  auto is_member_temp = [](const std::filesystem::path& p) {
    std::string stem = p.stem().string();
    return p.extension() == ".mp4" && stem.size() == 32 &&
           stem.find_first_not_of("0123456789abcdef") == std::string::npos;
  };
  int removed = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(work_dir, ec)) {
    const auto& p = entry.path();
    if (!entry.is_regular_file(ec) || !(p.extension() == ".tmp" || is_member_temp(p))) continue;
    if (std::filesystem::remove(p, ec)) {
      spdlog::info("decode: removed stale temporary {} ({} bytes, left by an interrupted run)", p.string(),
                   entry.file_size(ec));
      ++removed;
    }
  }
  return removed;
}

ArchiveDecoder::ArchiveDecoder(const kaio::DecodeConfig& config, std::filesystem::path work_dir,
                               kaio::SpaceReserver& reserver)
    : spec_(from_config(config)),
      limits_(limits_from_config(config)),
      workers_(std::max(1, config.workers)),
      codec_threads_(config.codec_threads),
      timeout_(config.timeout),
      work_dir_(std::move(work_dir)),
      reserver_(reserver) {}

void ArchiveDecoder::run(std::unique_ptr<kaio::ByteSource> archive, const std::string& source_file,
                         const CaptionMap* captions, std::function<void(ClipResult)> on_clip, std::stop_token stop) {
  Run run(spec_, workers_, codec_threads_, timeout_, work_dir_, reserver_, source_file, std::move(on_clip),
          stop);
  std::exception_ptr stream_error;
  try {
    ArchiveReader reader(std::move(archive), limits_);
    while (true) {
      run.wait_for_room();
      Member m;
      bool more = false;
      try {
        more = reader.next(m);
      } catch (const Error& e) {
        if (reader.broken()) throw;
        run.fail_member(run.take_index(), reader.member_path(), e.what());
        continue;
      }
      if (!more) break;
      if (planned_ && planned_(m.path)) {
        run.skip_planned_member(run.take_index(), m.path);
        continue;
      }
      Job job;
      job.index = run.take_index();
      job.member = m.path;
      job.clip_id = member_id(source_file, m.path);
      job.temp = work_dir_ / (job.clip_id + ".mp4");
      if (captions) {
        if (const auto* c = captions->find(m.path)) job.caption = *c;
      }
      try {
        uint64_t hold = m.size >= 0 ? static_cast<uint64_t>(m.size) : kUnknownMemberReserve;
        job.member_claim = run.reserve_member(hold, "extract " + m.path + " from " + source_file);
        reader.extract_to(job.temp, job.member_claim.get());
      } catch (const Error& e) {
        if (reader.broken() || e.kind() == ErrorKind::cancelled || e.kind() == ErrorKind::disk_full) throw;
        run.fail_member(job.index, m.path, e.what());
        continue;
      }
      run.submit(std::move(job));
    }
    spdlog::info("decode {}: archive read, {} bytes in, {} out, {} members skipped by decode.members", source_file,
                 reader.bytes_in(), reader.bytes_out(), reader.skipped());
  } catch (...) {
    stream_error = std::current_exception();
  }
  run.finish();
  if (stream_error) std::rethrow_exception(stream_error);
  if (stop.stop_requested()) throw Error(ErrorKind::cancelled, "decode of " + source_file + " cancelled");
}

}  // namespace kaio::decode
