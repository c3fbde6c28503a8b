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
#include "decode/video.h"

namespace kaio::decode {
namespace {

// What to hold for a member whose header does not give its size (streamed
// zip); the claim grows while extracting if the member is larger.
constexpr uint64_t kUnknownMemberReserve = 64ULL * 1024 * 1024;

using Clock = std::chrono::steady_clock;

std::string bytes_text(uint64_t n) {
  return std::to_string(n) + " bytes";
}

// A shard's claim: what its container's duration gave it, plus what it grew
// by while decoding. Bytes on disk never exceed it: the writer asks grow()
// before it writes past it (ShardSpace). Growth never queues behind other
// reservations and never waits past ShardLimits::grow_wait, because the clip
// holds its member and its partial shard meanwhile: waiting for space that
// only training frees, while the trainer may wait for this very clip, could
// wait forever. A growth that can never fit fails at once.
class ShardClaim : public kaio::SpaceClaim {
 public:
  struct Context {
    std::string what;      // for the reserver: "decode <member>"
    std::string clip;      // for messages: "member M of A"
    std::string declared;  // what the container said about its length
    uint64_t ceiling = 0;  // the most the shard can need (the sample bound's windows)
    ShardLimits limits;
    std::stop_token stop;
    Clock::time_point deadline;  // decode.timeout
  };

  ShardClaim(kaio::SpaceReserver& reserver, std::unique_ptr<kaio::SpaceClaim> first, Context context)
      : reserver_(reserver), first_bytes_(first->bytes()), ctx_(std::move(context)) {
    parts_.push_back(std::move(first));
  }

  uint64_t bytes() const override {
    uint64_t sum = 0;
    for (const auto& p : parts_) sum += p->bytes();
    return sum;
  }

  // Shrinking gives the newest parts back first; growing grows the last part
  // (that may wait like any growth: only for callers that hold no partial file).
  void resize(uint64_t bytes) override {
    uint64_t held = this->bytes();
    while (held > bytes && parts_.size() > 1 && held - parts_.back()->bytes() >= bytes) {
      held -= parts_.back()->bytes();
      parts_.pop_back();
    }
    auto& last = parts_.back();
    uint64_t others = held - last->bytes();
    last->resize(bytes > others ? bytes - others : 0);
  }

  // ShardSpace: holds at least `need` bytes, or throws naming the clip and the sizes.
  uint64_t grow(uint64_t need) {
    uint64_t held = bytes();
    if (need <= held) return held;
    const auto& limits = ctx_.limits;
    if (limits.max_bytes && need > limits.max_bytes) {
      too_large(need, "one shard may hold at most " + bytes_text(limits.max_bytes));
    }
    // Steps of half again what is held: few claims and few calls for a clip
    // that keeps growing.
    uint64_t target = std::min(held + held / 2, ctx_.ceiling);
    if (limits.max_bytes) target = std::min(target, limits.max_bytes);
    target = std::max(target, need);
    auto give_up = std::min(Clock::now() + limits.grow_wait, ctx_.deadline);
    while (true) {
      if (target > need && take(target, false)) return bytes();
      if (take(need, true)) return bytes();
      if (ctx_.stop.stop_requested()) throw Error(ErrorKind::cancelled, ctx_.clip + ": decode cancelled");
      if (Clock::now() >= give_up) {
        auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(limits.grow_wait).count();
        throw Error(ErrorKind::budget,
                    ctx_.clip + ": its shard outgrew its claim: it needs " + bytes_text(need) + ", " + ctx_.declared +
                        " (" + bytes_text(first_bytes_) + " claimed, " + bytes_text(held) +
                        " held); no room for the other " + bytes_text(need - held) + " came within " +
                        std::to_string(waited) +
                        " ms, and waiting longer would hold space that others need (storage.budget)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

 private:
  // Takes `want` bytes in all if there is room now: one claim for all of it
  // (replacing the parts, which go only after it is held), else one for the
  // difference. try_reserve throws Error(budget) when `want` can never fit.
  bool take(uint64_t want, bool last) {
    try {
      if (auto whole = reserver_.try_reserve(want, ctx_.what)) {
        parts_.clear();
        parts_.push_back(std::move(whole));
        return true;
      }
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::budget) throw;
      if (last) too_large(want, e.what());
      return false;
    }
    if (auto more = reserver_.try_reserve(want - bytes(), ctx_.what + " (growth)")) {
      parts_.push_back(std::move(more));
      return true;
    }
    return false;
  }

  [[noreturn]] void too_large(uint64_t need, const std::string& why) const {
    throw Error(ErrorKind::budget, ctx_.clip + ": too large for the budget: its shard needs " + bytes_text(need) +
                                       " and more, " + ctx_.declared + " (" + bytes_text(first_bytes_) + " claimed); " +
                                       why);
  }

  kaio::SpaceReserver& reserver_;
  uint64_t first_bytes_;
  Context ctx_;
  std::vector<std::unique_ptr<kaio::SpaceClaim>> parts_;
};

struct Job {
  int index = 0;
  std::string member;
  std::string clip_id;
  std::string caption;
  std::filesystem::path temp;
  std::unique_ptr<kaio::SpaceClaim> member_claim;
  bool probed = false;  // its shard's size is known (or it failed before)
};

// One run(): the job queue, the workers, and in-order delivery.
class Run {
 public:
  Run(const WindowSpec& spec, int workers, int codec_threads, std::chrono::milliseconds timeout,
      const ShardLimits& shard_limits, const std::filesystem::path& work_dir, kaio::SpaceReserver& reserver,
      std::string source_file, std::function<void(ClipResult)> on_clip, const std::stop_token& outer)
      : spec_(spec),
        codec_threads_(codec_threads),
        timeout_(timeout),
        shard_limits_(shard_limits),
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
    throw_if_stopped();
  }

  int take_index() { return next_index_++; }

  void throw_if_stopped() const {
    if (stop_.stop_requested()) throw Error(ErrorKind::cancelled, "decode of " + source_file_ + " cancelled");
  }

  // A member extracted ahead must neither queue in front of the shard
  // reservations of members already extracted (reservations are first come
  // first served, so it would wait for space only their delivery frees, and
  // they for it) nor take the space their shards need. So while others are in
  // flight it waits until each of them is probed (its shard's size known),
  // then takes space only if a shard's worth per member in flight stays free
  // beside it; once none is, it queues like any reservation.
  std::unique_ptr<kaio::SpaceClaim> reserve_member(uint64_t bytes, const std::string& what) {
    while (true) {
      std::unique_lock lock(mu_);
      int others = next_index_ - delivered_ - 1;
      if (others <= 0) break;
      // A member in flight not probed yet: the shard size to keep free for it is not known.
      const bool probed = unprobed_ == 0;
      uint64_t shard = shard_estimate_;
      if (probed) {
        lock.unlock();
        std::unique_ptr<kaio::SpaceClaim> claim;
        try {
          claim = reserver_.try_reserve(bytes + shard * static_cast<uint64_t>(others + 1), what);
        } catch (const Error& e) {
          // The member and the shards beside it can never fit at once (the
          // budget's try_reserve says so by throwing): wait until fewer are in
          // flight instead of failing a member that fits alone.
          if (e.kind() != ErrorKind::budget) throw;
        }
        if (claim) {
          claim->resize(bytes);
          return claim;
        }
        lock.lock();
      }
      room_.wait_for(lock, stop(), std::chrono::milliseconds(50),
                     [&] { return (!probed && unprobed_ == 0) || next_index_ - delivered_ - 1 < others; });
      throw_if_stopped();
    }
    return reserver_.reserve(bytes, what);
  }

  // Clips enter the plan in member order, so only the oldest undelivered
  // member's shard lets a chunk close and training free space. A later
  // member's shard takes space only when it is free at once; otherwise it
  // waits until its member is the oldest, never queueing in front of the
  // oldest's reservation (with two workers each holding a member and waiting
  // for a shard, the smallest accepted budget sat in budget-wait for good).
  std::unique_ptr<kaio::SpaceClaim> reserve_shard(int index, uint64_t bytes, const std::string& what) {
    while (true) {
      if (auto claim = reserver_.try_reserve(bytes, what)) return claim;
      std::unique_lock lock(mu_);
      if (delivered_ >= index) break;
      room_.wait_for(lock, stop(), std::chrono::milliseconds(50), [&] { return delivered_ >= index; });
      throw_if_stopped();
    }
    return reserver_.reserve(bytes, what);
  }

  void submit(Job job) {
    std::lock_guard lock(mu_);
    ++unprobed_;
    jobs_.push_back(std::move(job));
    work_ready_.notify_one();
  }

  void skip_planned_member(int index, const std::string& member) {
    ClipResult r = undecoded(index, member);
    r.planned = true;
    deliver(std::move(r));
  }

  void fail_member(int index, const std::string& member, const std::string& error) {
    spdlog::warn("decode {}: member {} failed: {}", source_file_, printable(member), error);
    ClipResult r = undecoded(index, member);
    r.error = error;
    deliver(std::move(r));
  }

  // Drains the queue, joins the workers, rethrows a callback's exception.
  void finish() {
    close_and_join();
    if (callback_error_) std::rethrow_exception(std::exchange(callback_error_, nullptr));
  }

 private:
  // The result of a member that is not decoded here (failed or planned).
  ClipResult undecoded(int index, const std::string& member) const {
    ClipResult r;
    r.source_file = source_file_;
    r.member = member;
    r.clip_id = member_id(source_file_, member);
    r.index = index;
    return r;
  }

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
      ClipResult r = process(job);
      mark_probed(job);  // a member that failed before its probe
      deliver(std::move(r));
    }
  }

  void mark_probed(Job& job) {
    if (job.probed) return;
    job.probed = true;
    std::lock_guard lock(mu_);
    --unprobed_;
    room_.notify_all();
  }

  ClipResult process(Job& job) {
    ClipResult r;
    r.source_file = source_file_;
    r.member = job.member;
    r.clip_id = job.clip_id;
    r.caption = job.caption;
    r.index = job.index;
    const auto shard = work_dir_ / (job.clip_id + ".shard");
    std::unique_ptr<ShardClaim> claim;  // outlives the shard file on every path
    try {
      const auto deadline = Clock::now() + timeout_;
      auto probe = probe_clip(job.temp, spec_);
      std::error_code ec;
      const uint64_t member_bytes = std::filesystem::file_size(job.temp, ec);
      const int64_t max_samples = max_samples_for(ec ? 0 : member_bytes, spec_);
      // The container's duration sizes the claim, but never past what the
      // file's size allows (a claimed duration of days in a small file).
      int64_t most = (max_samples - spec_.frames) / spec_.stride + 1;
      int expected = static_cast<int>(std::min<int64_t>(probe.expected_windows, most));
      size_t meta = source_file_.size() + job.member.size() + job.caption.size();
      uint64_t bytes = shard_bytes(spec_, expected + 1, meta);
      {
        std::lock_guard lock(mu_);
        shard_estimate_ = std::max(shard_estimate_, bytes);
      }
      mark_probed(job);
      ShardClaim::Context context;
      context.what = "decode " + job.member;
      context.clip = "member " + printable(job.member) + " of " + source_file_;
      context.declared = probe.duration > 0 ? "its container declares " + std::to_string(probe.duration) + " s (" +
                                                  std::to_string(probe.expected_windows) + " windows)"
                                            : "its container declares no duration";
      context.ceiling = shard_bytes(spec_, static_cast<int>(std::min<int64_t>(most, INT32_MAX - 1)) + 1, meta);
      context.limits = shard_limits_;
      context.stop = stop();
      context.deadline = deadline;
      // The member stays on disk while its shard is written, so the two must fit together.
      const uint64_t held = job.member_claim ? job.member_claim->bytes() : 0;
      if (shard_limits_.max_bytes &&
          reserver_.on_disk_bytes(bytes) + reserver_.on_disk_bytes(held) > shard_limits_.max_bytes) {
        throw Error(ErrorKind::budget, context.clip + ": too large for the budget: its shard needs " +
                                           bytes_text(bytes) + " beside the member's " + bytes_text(held) + ", " +
                                           context.declared + "; one clip may hold at most " +
                                           bytes_text(shard_limits_.max_bytes));
      }
      claim =
          std::make_unique<ShardClaim>(reserver_, reserve_shard(job.index, bytes, context.what), std::move(context));
      DecodeOptions opts;
      opts.codec_threads = codec_threads_;
      opts.timeout = timeout_;
      opts.stop = stop();
      opts.shard_space = [&claim](uint64_t need) { return claim->grow(need); };
      opts.max_samples = max_samples;
      auto summary = decode_clip(job.temp, ClipOrigin{source_file_, job.member, job.caption}, spec_, shard, opts);
      if (summary.windows == 0) {
        r.error = summary.skipped_reason;
        claim.reset();
      } else {
        claim->resize(summary.bytes);  // never more than it holds: the writer held every byte first
        r.shard = shard;
        r.windows = summary.windows;
        r.shard_bytes = summary.bytes;
        r.claim = std::move(claim);
      }
    } catch (const Error& e) {
      // No shard survives a failure, and its bytes are given back only after the unlink.
      std::error_code ec;
      std::filesystem::remove(shard, ec);
      claim.reset();
      if (e.kind() == ErrorKind::disk_full) {
        // Not the member's fault: the whole archive is retried once space returns.
        abort_run(std::current_exception());
        r.error = e.what();
        std::filesystem::remove(job.temp, ec);
        job.member_claim.reset();
        return r;
      }
      r.error = e.what();
      if (r.error.find(printable(job.member)) == std::string::npos || r.error.find(source_file_) == std::string::npos) {
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
    if (!callback_error_) callback_error_ = std::move(error);
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
  ShardLimits shard_limits_;
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
  int unprobed_ = 0;             // members submitted whose shard size is not known yet
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

// A member that alone holds more than one clip may: extracting it could wait
// for space that only this clip's own delivery frees. "" when it may go on.
std::string ArchiveDecoder::too_large_to_extract(const Member& m, const std::string& source_file) const {
  if (shard_limits_.max_bytes == 0 || m.size < 0) return "";
  uint64_t need = reserver_.on_disk_bytes(static_cast<uint64_t>(m.size));
  if (need <= shard_limits_.max_bytes) return "";
  return "member " + printable(m.path) + " of " + source_file + ": too large for the budget: the member needs " +
         bytes_text(need) + " on disk before its shard; one clip may hold at most " +
         bytes_text(shard_limits_.max_bytes);
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
                         const CaptionMap* captions, std::function<void(ClipResult)> on_clip,
                         const std::stop_token& stop) {
  Run run(spec_, workers_, codec_threads_, timeout_, shard_limits_, work_dir_, reserver_, source_file,
          std::move(on_clip), stop);
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
      if (const auto why = too_large_to_extract(m, source_file); !why.empty()) {
        run.fail_member(job.index, m.path, why);
        continue;
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
