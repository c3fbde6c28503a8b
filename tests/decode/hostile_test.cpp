// Clips whose containers lie about their length (issue 14, item 2): a shard
// never grows past its claim, a clip too large for the budget fails alone with
// the archive, the member and the sizes, leaves no file, and the other members
// of its archive still decode; a timestamp gap ends quickly.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "archive_builder.h"
#include "cache/budget.h"
#include "common/error.h"
#include "common/fs.h"
#include "counting_reserver.h"
#include "decode/file_source.h"
#include "decode/pipeline.h"
#include "decode/shard.h"
#include "decode/video.h"
#include "hostile_inputs.h"
#include "synth.h"
#include "test_util.h"
#include "tests/support/sandbox.h"

extern "C" {
#include <libavutil/log.h>
}

namespace kaio::decode {
namespace {

using kaio::test::Sandbox;
using testing::CountingReserver;
using Clock = std::chrono::steady_clock;

const int quiet_ffmpeg = [] {
  av_log_set_level(AV_LOG_FATAL);
  return 0;
}();

kaio::DecodeConfig small_config() {
  kaio::DecodeConfig c;
  c.frames = 4;
  c.stride = 4;
  c.fps = 4;
  c.size = 32;  // a window is 12288 bytes
  c.workers = 2;
  return c;
}

WindowSpec small_spec() {
  return from_config(small_config());
}

std::string good_clip(const Sandbox& dir) {
  auto clip = dir / "good.mp4";
  mkdata::encode_clip(clip, {64, 48, 8, 2, 1, ""});
  return testing::read_file(clip);
}

struct Collected {
  std::mutex mu;
  std::vector<ClipResult> results;
  // Keeps the result, but gives its shard back at once (unlink, then the claim).
  void operator()(ClipResult r) {
    std::lock_guard lock(mu);
    if (!r.shard.empty()) std::filesystem::remove(r.shard);
    r.claim.reset();
    results.push_back(std::move(r));
  }
};

// Samples, every millisecond while a decode runs, one member's shard file
// against the bytes the reserver holds for it.
class ShardWatch {
 public:
  ShardWatch(const std::filesystem::path& work, const std::string& archive, const std::string& member,
             const CountingReserver& reserver)
      : tmp_(work / (member_id(archive, member) + ".shard.tmp")),
        final_(work / (member_id(archive, member) + ".shard")),
        what_("decode " + member),
        reserver_(reserver),
        thread_([this](const std::stop_token& st) { loop(st); }) {}

  void stop() {
    thread_.request_stop();
    thread_.join();
  }
  int over() const { return over_; }
  int samples() const { return samples_; }
  uint64_t largest() const { return largest_; }
  uint64_t worst_file() const { return worst_file_; }
  uint64_t worst_claim() const { return worst_claim_; }
  bool final_seen() const { return final_seen_; }

 private:
  void loop(const std::stop_token& st) {
    while (!st.stop_requested()) {
      std::error_code ec;
      uint64_t size = std::filesystem::file_size(tmp_, ec);
      if (!ec) {
        uint64_t held = reserver_.held_for(what_);
        // The claim goes only after the unlink: a file still there now was
        // covered when `held` was read.
        if (std::filesystem::exists(tmp_)) {
          ++samples_;
          largest_ = std::max<uint64_t>(largest_, size);
          if (size > held) {
            ++over_;
            worst_file_ = size;
            worst_claim_ = held;
          }
        }
      }
      if (std::filesystem::exists(final_)) final_seen_ = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  std::filesystem::path tmp_, final_;
  std::string what_;
  const CountingReserver& reserver_;
  std::atomic<int> over_{0}, samples_{0};
  std::atomic<uint64_t> largest_{0}, worst_file_{0}, worst_claim_{0};
  std::atomic<bool> final_seen_{false};
  std::jthread thread_;
};

std::vector<std::string> files_in(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) names.push_back(e.path().filename().string());
  }
  return names;
}

void expect_others_decoded(const std::vector<ClipResult>& results, size_t hostile) {
  for (size_t i = 0; i < results.size(); ++i) {
    if (i == hostile) continue;
    SCOPED_TRACE(results[i].member);
    EXPECT_TRUE(results[i].error.empty()) << results[i].error;
    EXPECT_EQ(results[i].windows, 2);  // 2 s at 4 fps = 8 samples = 2 windows of 4
  }
}

// A raw H.264 stream named .mp4 declares no duration: its claim is one window,
// and it holds two minutes of frames (120 windows, 1.5 MB) under a 1 MB budget.
TEST(DecodeHostile, RawH264NamedMp4NeverOutgrowsItsClaimAndFailsAlone) {
  Sandbox dir;
  testing::make_raw_h264(dir / "raw.mp4", 120);
  std::string good = good_clip(dir);
  auto archive = dir / "hostile.tar";
  testing::write_archive(archive, testing::Format::tar,
                         {{"a.mp4", good}, {"videos/raw.mp4", testing::read_file(dir / "raw.mp4")}, {"b.mp4", good}});
  auto work = dir / "work";
  std::filesystem::create_directories(work);
  const uint64_t budget = 1'000'000;
  CountingReserver reserver(budget, CountingReserver::Mode::wait);
  ArchiveDecoder decoder(small_config(), work, reserver);
  decoder.set_shard_limits({0, std::chrono::milliseconds(300)});
  ShardWatch watch(work, "data/hostile.tar", "videos/raw.mp4", reserver);
  Collected got;
  auto start = Clock::now();
  decoder.run(std::make_unique<FileSource>(archive), "data/hostile.tar", nullptr, std::ref(got), {});
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  watch.stop();

  std::printf(
      "raw h264 (.mp4): %d samples of its shard file, largest %llu bytes, over its claim %d times "
      "(worst %llu bytes on disk against %llu held); peak held %llu of %llu; %.2f s\n",
      watch.samples(), static_cast<unsigned long long>(watch.largest()), watch.over(),
      static_cast<unsigned long long>(watch.worst_file()), static_cast<unsigned long long>(watch.worst_claim()),
      static_cast<unsigned long long>(reserver.peak()), static_cast<unsigned long long>(budget), seconds);
  ASSERT_EQ(got.results.size(), 3u);
  const auto& bad = got.results[1];
  std::printf("raw h264 (.mp4): %s\n", bad.error.c_str());
  EXPECT_GT(watch.samples(), 0);
  EXPECT_EQ(watch.over(), 0) << "the shard file grew past its claim";
  EXPECT_GT(watch.largest(), window_bytes(small_spec())) << "it grew past its first claim, within its claim";
  EXPECT_FALSE(watch.final_seen()) << "a shard too large for the budget was finished";
  EXPECT_EQ(bad.member, "videos/raw.mp4");
  EXPECT_EQ(bad.windows, 0);
  EXPECT_FALSE(bad.claim);
  EXPECT_NE(bad.error.find("videos/raw.mp4"), std::string::npos) << bad.error;
  EXPECT_NE(bad.error.find("data/hostile.tar"), std::string::npos) << bad.error;
  EXPECT_NE(bad.error.find(" bytes"), std::string::npos) << bad.error;
  EXPECT_NE(bad.error.find("declares no duration"), std::string::npos) << bad.error;
  expect_others_decoded(got.results, 1);
  EXPECT_TRUE(files_in(work).empty()) << "left: " << files_in(work).front();
  EXPECT_EQ(reserver.held(), 0u);
  EXPECT_LE(reserver.peak(), budget);
}

// An mp4 whose headers declare 1 s over two minutes of frames, through the
// real budget: the bytes under the cache folder never pass it.
TEST(DecodeHostile, Mp4DeclaringOneSecondKeepsTheDiskUnderTheBudget) {
  Sandbox dir;
  testing::make_lying_mp4(dir / "long.mp4", 120, 1.0);
  auto probe = probe_clip(dir / "long.mp4", small_spec());
  ASSERT_LT(probe.duration, 1.5) << "the input does not lie about its length";
  std::string good = good_clip(dir);
  auto archive = dir / "hostile.tar";
  testing::write_archive(archive, testing::Format::tar,
                         {{"a.mp4", good}, {"long.mp4", testing::read_file(dir / "long.mp4")}, {"b.mp4", good}});
  auto cache = dir / "cache";
  auto work = cache / "work";
  std::filesystem::create_directories(work);
  cache::BudgetOptions options;
  options.budget = 1'200'000;
  options.cache_dir = cache;
  options.state_dir = dir / "state";
  options.ledger_allowance = 0;
  cache::Budget budget(options);
  ArchiveDecoder decoder(small_config(), work, budget);
  decoder.set_shard_limits({0, std::chrono::milliseconds(300)});

  std::atomic<uint64_t> peak_disk{0};
  std::atomic<int> samples{0};
  std::jthread sampler([&](const std::stop_token& st) {
    while (!st.stop_requested()) {
      uint64_t used = disk_usage(cache) + disk_usage(dir / "state");
      peak_disk = std::max<uint64_t>(peak_disk, used);
      ++samples;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  Collected got;
  decoder.run(std::make_unique<FileSource>(archive), "data/hostile.tar", nullptr, std::ref(got), {});
  sampler.request_stop();
  sampler.join();

  std::printf("declares 1 s, holds 120 s: peak disk %llu of budget %llu (%d samples every 1 ms), budget peak %llu\n",
              static_cast<unsigned long long>(peak_disk.load()), static_cast<unsigned long long>(options.budget),
              samples.load(), static_cast<unsigned long long>(budget.status().peak_total));
  ASSERT_EQ(got.results.size(), 3u);
  const auto& bad = got.results[1];
  std::printf("declares 1 s: %s\n", bad.error.c_str());
  EXPECT_LE(peak_disk.load(), options.budget);
  EXPECT_NE(bad.error.find("long.mp4"), std::string::npos) << bad.error;
  EXPECT_NE(bad.error.find("data/hostile.tar"), std::string::npos) << bad.error;
  EXPECT_NE(bad.error.find("declares 1."), std::string::npos) << bad.error;
  EXPECT_NE(bad.error.find(" bytes"), std::string::npos) << bad.error;
  EXPECT_FALSE(bad.claim);
  expect_others_decoded(got.results, 1);
  EXPECT_TRUE(files_in(work).empty()) << "left: " << files_in(work).front();
  EXPECT_EQ(budget.status().reserved, 0u);
}

// With a cap on one shard (what the engine can pass: the budget less its
// working set), the clip fails as soon as it needs more, naming the cap.
TEST(DecodeHostile, ShardCapFailsTheClipAtOnce) {
  Sandbox dir;
  testing::make_raw_h264(dir / "raw.mp4", 60);
  std::string good = good_clip(dir);
  auto archive = dir / "a.tar";
  testing::write_archive(archive, testing::Format::tar,
                         {{"a.mp4", good}, {"raw.mp4", testing::read_file(dir / "raw.mp4")}});
  CountingReserver reserver(1ull << 30, CountingReserver::Mode::wait);
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  decoder.set_shard_limits({100'000, std::chrono::milliseconds(60'000)});
  Collected got;
  auto start = Clock::now();
  decoder.run(std::make_unique<FileSource>(archive), "a.tar", nullptr, std::ref(got), {});
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));
  ASSERT_EQ(got.results.size(), 2u);
  EXPECT_NE(got.results[1].error.find("at most 100000 bytes"), std::string::npos) << got.results[1].error;
  EXPECT_NE(got.results[1].error.find("raw.mp4 of a.tar"), std::string::npos) << got.results[1].error;
  expect_others_decoded(got.results, 1);
  EXPECT_EQ(reserver.held(), 0u);
  for (const auto& name : files_in(dir.path())) EXPECT_EQ(name.find(".shard"), std::string::npos) << name;
}

// A member that alone holds more than one clip may (what the engine leaves
// beside the chunk being formed) fails before it is extracted: its extraction
// could only wait for space that this clip's own delivery would free. Before,
// it was extracted first and, beside a chunk's earlier shards, waited for good.
TEST(DecodeHostile, MemberLargerThanAClipMayHoldFailsBeforeItsExtraction) {
  Sandbox dir;
  std::string good = good_clip(dir);
  auto archive = dir / "a.tar";
  testing::write_archive(archive, testing::Format::tar,
                         {{"a.mp4", good}, {"big.mp4", std::string(200'000, 'x')}, {"c.mp4", good}});
  CountingReserver reserver(1ull << 30, CountingReserver::Mode::wait);
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  decoder.set_shard_limits({100'000, std::chrono::milliseconds(60'000)});
  Collected got;
  decoder.run(std::make_unique<FileSource>(archive), "a.tar", nullptr, std::ref(got), {});
  ASSERT_EQ(got.results.size(), 3u);
  const auto& error = got.results[1].error;
  EXPECT_NE(error.find("big.mp4 of a.tar: too large for the budget"), std::string::npos) << error;
  EXPECT_NE(error.find("the member needs 200000 bytes"), std::string::npos) << error;
  EXPECT_NE(error.find("at most 100000 bytes"), std::string::npos) << error;
  expect_others_decoded(got.results, 1);
  for (const auto& what : reserver.whats()) EXPECT_EQ(what.find("big.mp4"), std::string::npos) << what;
  EXPECT_EQ(reserver.held(), 0u);
}

// A 200000 s jump in the timestamps of a 2 s, 20 KB file: once it asked for
// 800000 samples (200000 windows, 2.4 GB). It ends now, quickly, with an error
// naming the clip, and leaves nothing.
TEST(DecodeHostile, TimestampGapEndsQuicklyWithAnError) {
  Sandbox dir;
  auto clip = dir / "gap.mp4";
  testing::make_gap_mp4(clip, 200000);
  auto start = Clock::now();
  try {
    decode_clip(clip, ClipOrigin{"data/a.tar", "gap.mp4", ""}, small_spec(), dir / "gap.shard", DecodeOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    std::printf("gap of 200000 s: %s\n", e.what());
    EXPECT_EQ(e.kind(), ErrorKind::rejected) << e.what();
    EXPECT_NE(std::string(e.what()).find("gap.mp4 of data/a.tar"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("timestamps"), std::string::npos) << e.what();
  }
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf("gap of 200000 s: ended after %.2f s\n", seconds);
  EXPECT_LT(seconds, 20);
  EXPECT_FALSE(std::filesystem::exists(dir / "gap.shard"));
  EXPECT_FALSE(std::filesystem::exists(dir / "gap.shard.tmp"));
}

// The same clip in an archive: it fails alone, the others decode.
TEST(DecodeHostile, TimestampGapFailsOneMemberOfTheArchive) {
  Sandbox dir;
  testing::make_gap_mp4(dir / "gap.mp4", 200000);
  std::string good = good_clip(dir);
  auto archive = dir / "a.tar";
  testing::write_archive(archive, testing::Format::tar,
                         {{"a.mp4", good}, {"gap.mp4", testing::read_file(dir / "gap.mp4")}, {"b.mp4", good}});
  auto work = dir / "work";
  std::filesystem::create_directories(work);
  CountingReserver reserver(1ull << 30, CountingReserver::Mode::wait);
  ArchiveDecoder decoder(small_config(), work, reserver);
  Collected got;
  auto start = Clock::now();
  decoder.run(std::make_unique<FileSource>(archive), "data/a.tar", nullptr, std::ref(got), {});
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));
  ASSERT_EQ(got.results.size(), 3u);
  EXPECT_NE(got.results[1].error.find("gap.mp4"), std::string::npos) << got.results[1].error;
  EXPECT_NE(got.results[1].error.find("data/a.tar"), std::string::npos) << got.results[1].error;
  expect_others_decoded(got.results, 1);
  EXPECT_TRUE(files_in(work).empty()) << "left: " << files_in(work).front();
  // Bounded by the member's size (one sample per 16 bytes of it), not by its
  // timestamps: well under the 2.4 GB the gap asks for.
  EXPECT_LT(reserver.peak(), 20'000'000u);
}

// Inside a gap the stop token and decode.timeout are checked sample by sample
// (the sample bound is lifted here to reach them).
TEST(DecodeHostile, StopAndTimeoutEndAGap) {
  Sandbox dir;
  auto clip = dir / "gap.mp4";
  testing::make_gap_mp4(clip, 200000);
  {
    std::stop_source stop;
    int windows = 0;
    DecodeOptions opts;
    opts.stop = stop.get_token();
    opts.max_samples = int64_t{1} << 40;
    opts.shard_space = [&](uint64_t need) -> uint64_t {
      if (++windows > 50) throw Error(ErrorKind::internal, "still writing windows 49 windows after the stop");
      if (windows == 2) stop.request_stop();  // inside the gap: the first window is before it
      return need;
    };
    try {
      decode_clip(clip, ClipOrigin{"a.tar", "gap.mp4", ""}, small_spec(), dir / "s.shard", opts);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::cancelled) << e.what();
    }
    EXPECT_EQ(windows, 2);
  }
  {
    int windows = 0;
    DecodeOptions opts;
    // Window 2 waits out the whole timeout; the timeout is long enough that a
    // busy machine reaches window 2 well before it.
    opts.timeout = std::chrono::milliseconds(6000);
    opts.max_samples = int64_t{1} << 40;
    opts.shard_space = [&](uint64_t need) -> uint64_t {
      if (++windows > 50) throw Error(ErrorKind::internal, "still writing windows after decode.timeout");
      if (windows == 2) std::this_thread::sleep_for(opts.timeout + std::chrono::milliseconds(100));
      return need;
    };
    try {
      decode_clip(clip, ClipOrigin{"a.tar", "gap.mp4", ""}, small_spec(), dir / "s.shard", opts);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("decode.timeout"), std::string::npos) << e.what();
    }
    EXPECT_EQ(windows, 2);
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "s.shard.tmp"));
}

// The writer asks for every byte before it writes it, and a refusal leaves no file.
TEST(DecodeHostile, ShardWriterHoldsBeforeItWrites) {
  Sandbox dir;
  WindowSpec spec;
  spec.frames = 2;
  spec.size = 5;
  std::vector<uint8_t> frames(150, 7);
  uint64_t held = 0;
  int asks = 0;
  {
    ShardWriter writer(dir / "s.shard", spec, [&](uint64_t need) {
      ++asks;
      EXPECT_LE(std::filesystem::file_size(dir / "s.shard.tmp"), held);
      held = need;
      return held;
    });
    for (int i = 0; i < 3; ++i) {
      writer.add_window(frames, {double(i), "a.tar", "m.mp4", "c"});
      EXPECT_LE(std::filesystem::file_size(dir / "s.shard.tmp"), held);
    }
    EXPECT_EQ(writer.finish(), held);  // the finished size is what was held for it
  }
  EXPECT_EQ(asks, 3);
  {
    ShardWriter writer(dir / "t.shard", spec, [&](uint64_t need) -> uint64_t {
      if (need > 300) throw Error(ErrorKind::budget, "no room");
      return need;
    });
    writer.add_window(frames, {});
    EXPECT_THROW(writer.add_window(frames, {}), Error);
    EXPECT_LE(std::filesystem::file_size(dir / "t.shard.tmp"), 300u);
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "t.shard.tmp"));
}

// Found while doing this: a member extracted ahead asks try_reserve for itself
// plus the shards beside it, which the real budget refuses with Error(budget)
// when that sum exceeds it; the member then failed though it fits alone.
TEST(DecodeHostile, MemberThatFitsAloneIsNotFailedByTheShardsBesideIt) {
  Sandbox dir;
  auto clip = dir / "big.mp4";
  mkdata::encode_clip(clip, {96, 64, 12, 2, 3, ""});
  // 640 KB of padding the demuxer skips: one member fits the 700 KB budget
  // with its shard, but not beside the shards of the others in flight.
  std::string big = testing::read_file(clip) + std::string(640'000, '\0');
  auto archive = dir / "a.tar";
  testing::write_archive(archive, testing::Format::tar, {{"a.mp4", big}, {"b.mp4", big}, {"c.mp4", big}});
  CountingReserver reserver(700'000, CountingReserver::Mode::wait);
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  Collected got;
  decoder.run(std::make_unique<FileSource>(archive), "a.tar", nullptr, std::ref(got), {});
  ASSERT_EQ(got.results.size(), 3u);
  for (const auto& r : got.results) EXPECT_TRUE(r.error.empty()) << r.member << ": " << r.error;
}

}  // namespace
}  // namespace kaio::decode
