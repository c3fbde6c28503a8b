// The decode stage end to end: generated LLaVA and PhysicalAI archives through
// ArchiveDecoder, with a ledger-keeping reserver.
#include "decode/pipeline.h"

#include <gtest/gtest.h>

#include <mutex>

#include "archive_builder.h"
#include "common/error.h"
#include "counting_reserver.h"
#include "decode/captions.h"
#include "decode/file_source.h"
#include "decode/shard.h"
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

// The encoder's statistics would bury the test output.
const int quiet_ffmpeg = [] {
  av_log_set_level(AV_LOG_ERROR);
  return 0;
}();

kaio::DecodeConfig small_config() {
  kaio::DecodeConfig c;
  c.frames = 4;
  c.stride = 4;
  c.fps = 4;
  c.size = 32;
  c.workers = 2;
  return c;
}

std::vector<std::string> member_list(const std::filesystem::path& archive) {
  ArchiveReader reader(std::make_unique<FileSource>(archive), ArchiveLimits{});
  std::vector<std::string> names;
  Member m;
  while (reader.next(m)) names.push_back(m.path);
  return names;
}

struct Collected {
  std::mutex mu;
  std::vector<ClipResult> results;
  void operator()(ClipResult r) {
    std::lock_guard lock(mu);
    results.push_back(std::move(r));
  }
};

mkdata::DatasetSpec dataset(const std::filesystem::path& out, mkdata::Layout layout, int clips) {
  mkdata::DatasetSpec spec;
  spec.layout = layout;
  spec.out = out;
  spec.seed = 11;
  spec.clips = clips;
  spec.clips_per_archive = clips;
  spec.clip.width = 96;
  spec.clip.height = 64;
  spec.clip.fps = 12;
  spec.clip.seconds = 2;
  return spec;
}

TEST(DecodePipeline, LlavaArchiveInOrderWithCaptionsAndClaims) {
  Sandbox dir;
  auto summary = mkdata::write_dataset(dataset(dir / "data", mkdata::Layout::llava, 6));
  auto archive = dir / "data" / summary.archives.at(0);
  auto captions = load_captions(dir / "data" / summary.captions);
  ASSERT_EQ(captions.size(), 6u);
  auto work = dir / "work";
  std::filesystem::create_directories(work);
  CountingReserver reserver(1ull << 30);
  ArchiveDecoder decoder(small_config(), work, reserver);
  Collected got;
  decoder.run(std::make_unique<FileSource>(archive), "data/videos_1.tar.gz", &captions, std::ref(got), {});

  auto names = member_list(archive);
  ASSERT_EQ(got.results.size(), names.size());
  uint64_t claimed = 0;
  for (size_t i = 0; i < got.results.size(); ++i) {
    const auto& r = got.results[i];
    SCOPED_TRACE(r.member);
    EXPECT_EQ(r.index, static_cast<int>(i));
    EXPECT_EQ(r.member, names[i]);
    EXPECT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.clip_id, member_id("data/videos_1.tar.gz", r.member));
    EXPECT_EQ(r.windows, 2);  // 2 s at 4 fps = 8 samples = 2 windows of 4
    ASSERT_TRUE(r.claim);
    EXPECT_EQ(r.claim->bytes(), r.shard_bytes);
    EXPECT_EQ(std::filesystem::file_size(r.shard), r.shard_bytes);
    EXPECT_EQ(r.shard.parent_path(), work);
    claimed += r.claim->bytes();
    ASSERT_NE(captions.find(r.member), nullptr);
    EXPECT_EQ(r.caption, *captions.find(r.member));
    EXPECT_NE(r.caption.find("moves"), std::string::npos);
    ShardReader shard(r.shard);
    EXPECT_EQ(shard.info(0).caption, r.caption);
    EXPECT_EQ(shard.info(0).member, r.member);
    EXPECT_EQ(shard.info(0).source_file, "data/videos_1.tar.gz");
  }
  // Only the shards are held now; every extracted member is gone.
  EXPECT_EQ(reserver.held(), claimed);
  for (const auto& e : std::filesystem::directory_iterator(work)) {
    EXPECT_EQ(e.path().extension(), ".shard") << e.path();
  }
  got.results.clear();
  EXPECT_EQ(reserver.held(), 0u);
}

TEST(DecodePipeline, PhysicalAiZipDecodes) {
  Sandbox dir;
  auto summary = mkdata::write_dataset(dataset(dir / "data", mkdata::Layout::physicalai, 3));
  auto archive = dir / "data" / summary.archives.at(0);
  CountingReserver reserver(1ull << 30);
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  Collected got;
  decoder.run(std::make_unique<FileSource>(archive), summary.archives.at(0).string(), nullptr, std::ref(got), {});
  ASSERT_EQ(got.results.size(), 3u);
  for (const auto& r : got.results) {
    EXPECT_TRUE(r.error.empty()) << r.error;
    EXPECT_EQ(r.windows, 2);
    EXPECT_NE(r.member.find(".camera_front_wide_120fov.mp4"), std::string::npos);
  }
}

// Bad members are delivered as errors in their place; the archive goes on.
TEST(DecodePipeline, MemberFailuresDoNotStopTheArchive) {
  Sandbox dir;
  auto clip = dir / "good.mp4";
  mkdata::encode_clip(clip, {64, 48, 8, 2, 1, ""});
  std::string good = testing::read_file(clip);
  auto archive = dir / "mixed.tar.gz";
  testing::write_archive(archive, testing::Format::tar_gz,
                         {{"a.mp4", good},
                          {"broken.mp4", "not a video"},
                          {"../evil.mp4", good},
                          {"short.mp4", good.substr(0, 200)},
                          {"b.mp4", good}});
  CountingReserver reserver(1ull << 30);
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  Collected got;
  decoder.run(std::make_unique<FileSource>(archive), "mixed.tar.gz", nullptr, std::ref(got), {});
  ASSERT_EQ(got.results.size(), 5u);
  std::vector<std::string> members;
  for (const auto& r : got.results) members.push_back(r.member);
  EXPECT_EQ(members, (std::vector<std::string>{"a.mp4", "broken.mp4", "../evil.mp4", "short.mp4", "b.mp4"}));
  EXPECT_TRUE(got.results[0].error.empty());
  EXPECT_NE(got.results[1].error.find("broken.mp4"), std::string::npos) << got.results[1].error;
  EXPECT_NE(got.results[2].error.find("rejected"), std::string::npos) << got.results[2].error;
  EXPECT_FALSE(got.results[3].error.empty());
  EXPECT_TRUE(got.results[4].error.empty());
  EXPECT_FALSE(std::filesystem::exists(dir.path().parent_path() / "evil.mp4"));
  EXPECT_FALSE(got.results[1].claim);
}

TEST(DecodePipeline, BrokenStreamThrowsAfterDeliveringEarlierClips) {
  Sandbox dir;
  auto clip = dir / "good.mp4";
  mkdata::encode_clip(clip, {64, 48, 8, 2, 1, ""});
  std::string good = testing::read_file(clip);
  std::string noise = testing::noise(300000);
  auto archive = dir / "cut.tar.gz";
  testing::write_archive(archive, testing::Format::tar_gz, {{"a.mp4", good}, {"b.mp4", noise}, {"c.mp4", noise}});
  std::filesystem::resize_file(archive, std::filesystem::file_size(archive) * 2 / 3);
  CountingReserver reserver(1ull << 30);
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  Collected got;
  EXPECT_THROW(decoder.run(std::make_unique<FileSource>(archive), "cut.tar.gz", nullptr, std::ref(got), {}), Error);
  ASSERT_GE(got.results.size(), 1u);
  EXPECT_EQ(got.results[0].member, "a.mp4");
  EXPECT_TRUE(got.results[0].error.empty()) << got.results[0].error;
}

TEST(DecodePipeline, PlainVideoFileIsOneClip) {
  Sandbox dir;
  auto clip = dir / "solo.mp4";
  mkdata::encode_clip(clip, {64, 48, 8, 2, 1, ""});
  CountingReserver reserver(1ull << 30);
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  Collected got;
  decoder.run(std::make_unique<FileSource>(clip), "videos/solo.mp4", nullptr, std::ref(got), {});
  ASSERT_EQ(got.results.size(), 1u);
  EXPECT_EQ(got.results[0].member, "solo.mp4");
  EXPECT_EQ(got.results[0].windows, 2);
  EXPECT_TRUE(got.results[0].error.empty()) << got.results[0].error;
}

TEST(DecodePipeline, BudgetTooSmallFailsMembersNotTheRun) {
  Sandbox dir;
  auto clip = dir / "good.mp4";
  mkdata::encode_clip(clip, {64, 48, 8, 2, 1, ""});
  auto archive = dir / "a.tar";
  testing::write_archive(archive, testing::Format::tar, {{"a.mp4", testing::read_file(clip)}});
  CountingReserver reserver(100);  // smaller than the member
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  Collected got;
  decoder.run(std::make_unique<FileSource>(archive), "a.tar", nullptr, std::ref(got), {});
  ASSERT_EQ(got.results.size(), 1u);
  EXPECT_NE(got.results[0].error.find("budget"), std::string::npos) << got.results[0].error;
  EXPECT_EQ(reserver.held(), 0u);
}

// Many small clips through the pool (also the leak check under LeakSanitizer).
TEST(DecodePipeline, HundredClipsDecodeAndReleaseEverything) {
  Sandbox dir;
  auto spec = dataset(dir / "data", mkdata::Layout::physicalai, 100);
  spec.clip.width = 32;
  spec.clip.height = 32;
  spec.clip.seconds = 1;
  auto summary = mkdata::write_dataset(spec);
  CountingReserver reserver(1ull << 30);
  auto config = small_config();
  config.workers = 3;
  ArchiveDecoder decoder(config, dir / "data", reserver);
  int delivered = 0, windows = 0;
  uint64_t largest_claim = 0;
  decoder.run(std::make_unique<FileSource>(dir / "data" / summary.archives.at(0)), "chunk.zip", nullptr,
              [&](ClipResult r) {
                EXPECT_EQ(r.index, delivered);
                ++delivered;
                windows += r.windows;
                largest_claim = std::max(largest_claim, r.claim ? r.claim->bytes() : 0);
                std::filesystem::remove(r.shard);
              },
              {});
  EXPECT_EQ(delivered, 100);
  EXPECT_EQ(windows, 100);
  EXPECT_EQ(reserver.held(), 0u);
  // At most 2*workers+1 members are in flight, each holding its member and
  // its shard estimate: the peak stays far below 100 clips' worth.
  uint64_t per_clip = largest_claim * 3 + 64 * 1024;
  EXPECT_LT(reserver.peak(), per_clip * 10);
}

TEST(DecodePipeline, StaleTemporariesAreRemovedShardsKept) {
  Sandbox dir;
  std::string id = member_id("a.tar", "x.mp4");
  for (const auto& name : {id + ".mp4", id + ".mp4.tmp", id + ".shard.tmp", id + ".shard", std::string("notes.mp4")}) {
    std::ofstream(dir / name) << "x";
  }
  EXPECT_EQ(remove_stale_temporaries(dir.path()), 3);
  EXPECT_TRUE(std::filesystem::exists(dir / (id + ".shard")));
  EXPECT_TRUE(std::filesystem::exists(dir / "notes.mp4"));
  EXPECT_FALSE(std::filesystem::exists(dir / (id + ".mp4")));
}

TEST(DecodePipeline, StopRequestCancelsTheRun) {
  Sandbox dir;
  auto summary = mkdata::write_dataset(dataset(dir / "data", mkdata::Layout::llava, 4));
  CountingReserver reserver(1ull << 30);
  ArchiveDecoder decoder(small_config(), dir.path(), reserver);
  std::stop_source stop;
  int delivered = 0;
  try {
    decoder.run(
        std::make_unique<FileSource>(dir / "data" / summary.archives.at(0)), "a", nullptr,
        [&](ClipResult) {
          ++delivered;
          stop.request_stop();
        },
        stop.get_token());
    FAIL() << "not cancelled";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::cancelled) << e.what();
  }
  EXPECT_EQ(delivered, 1);
  EXPECT_EQ(reserver.held(), 0u);
}

}  // namespace
}  // namespace kaio::decode
