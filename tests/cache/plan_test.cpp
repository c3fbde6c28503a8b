#include "cache/plan.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>

#include "common/error.h"

using namespace kaio::cache;

namespace {

std::vector<ClipWindows> sample_clips(int n) {
  std::vector<ClipWindows> clips;
  for (int i = 0; i < n; ++i)
    clips.push_back({"clip" + std::to_string(i), static_cast<int64_t>(1 + (i * 7) % 5), static_cast<size_t>(i / 3)});
  return clips;
}

struct Step {
  PlanCursor before;
  WindowRef window;
};

// An uninterrupted run over `clips`, with the cursor saved before each window.
std::vector<Step> full_run(uint64_t seed, int k, int repeat, const std::vector<ClipWindows>& clips, int epoch = 0,
                           uint64_t cap = 0) {
  WindowSequence seq(seed, k, repeat, PlanCursor{epoch, 0, 0, 0, 0}, {}, cap);
  for (const auto& c : clips) seq.add_clip(c);
  seq.finish_epoch();
  std::vector<Step> steps;
  for (;;) {
    auto before = seq.cursor();
    auto w = seq.next();
    if (!w) break;
    steps.push_back({before, *w});
  }
  EXPECT_TRUE(seq.epoch_done());
  return steps;
}

}  // namespace

TEST(Plan, FileOrderIsASeededDeterministicPermutation) {
  auto a = file_order(7, 0, 100);
  EXPECT_EQ(a, file_order(7, 0, 100));
  EXPECT_NE(a, file_order(7, 1, 100));
  EXPECT_NE(a, file_order(8, 0, 100));
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<size_t> iota(100);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_TRUE(file_order(1, 0, 0).empty());
  // Pinned so a change of generator (or platform) cannot slip by.
  EXPECT_EQ(file_order(42, 0, 8), (std::vector<size_t>{6, 2, 5, 4, 1, 7, 3, 0}));
}

TEST(Plan, EveryWindowAppearsOncePerPassInADifferentOrder) {
  auto clips = sample_clips(8);
  auto p0 = chunk_windows(3, 0, 5, 0, clips);
  auto p1 = chunk_windows(3, 0, 5, 1, clips);
  EXPECT_NE(p0, p1);
  EXPECT_EQ(p0, chunk_windows(3, 0, 5, 0, clips));
  for (const auto& pass : {p0, p1}) {
    std::map<std::pair<std::string, int64_t>, int> seen;
    for (const auto& w : pass) ++seen[{w.clip, w.window}];
    int64_t total = 0;
    for (const auto& c : clips) {
      total += c.windows;
      for (int64_t w = 0; w < c.windows; ++w) EXPECT_EQ((seen[{c.clip, w}]), 1) << c.clip << " window " << w;
    }
    EXPECT_EQ(static_cast<int64_t>(pass.size()), total);
  }
}

TEST(Plan, ChunksAreTrainedRepeatTimesBeforeTheNextStarts) {
  auto clips = sample_clips(7);
  const int k = 3, repeat = 2;
  auto steps = full_run(11, k, repeat, clips);
  int64_t total = 0;
  for (const auto& c : clips) total += c.windows;
  EXPECT_EQ(static_cast<int64_t>(steps.size()), total * repeat);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < clips.size(); ++i) index[clips[i].clip] = i;
  size_t last_chunk = 0;
  std::map<std::pair<std::string, int64_t>, int> times;
  for (const auto& s : steps) {
    size_t chunk = index[s.window.clip] / k;
    EXPECT_GE(chunk, last_chunk);  // never goes back to an earlier chunk
    last_chunk = chunk;
    EXPECT_EQ(static_cast<size_t>(s.before.chunk_index), chunk);
    ++times[{s.window.clip, s.window.window}];
  }
  for (const auto& [key, n] : times) EXPECT_EQ(n, repeat) << key.first;
}

TEST(Plan, WaitsForAFullChunkUnlessTheEpochIsOver) {
  std::vector<int64_t> formed;
  WindowSequence seq(1, 3, 1, {},
                     [&](int, int64_t chunk, const std::vector<ClipWindows>&) { formed.push_back(chunk); });
  seq.add_clip({"a", 2, 0});
  seq.add_clip({"b", 2, 0});
  EXPECT_FALSE(seq.next().has_value());
  seq.add_clip({"c", 2, 1});
  EXPECT_FALSE(seq.next().has_value());  // file 0 may still have clips before c
  seq.file_complete(0);
  seq.add_clip({"d", 2, 4});
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(seq.next().has_value());
  EXPECT_EQ(formed, (std::vector<int64_t>{0}));
  EXPECT_EQ(seq.cursor().chunk_index, 1);  // moved on at the last window of chunk 0
  EXPECT_FALSE(seq.next().has_value());    // chunk 1 has one clip of three
  EXPECT_THROW(seq.add_clip({"late", 1, 0}), kaio::Error);
  seq.finish_epoch();
  EXPECT_EQ(seq.next()->clip, "d");
  EXPECT_EQ(seq.cursor().file_pos, 4u);
  EXPECT_TRUE(seq.next().has_value());
  EXPECT_FALSE(seq.next().has_value());
  EXPECT_TRUE(seq.epoch_done());
  EXPECT_EQ(formed, (std::vector<int64_t>{0, 1}));
}

TEST(Plan, ClipsArrivingOutOfOrderAcrossFilesTrainInPlanOrder) {
  auto clips = sample_clips(12);  // three clips per file, files 0..3
  auto in_order = full_run(5, 4, 1, clips);
  WindowSequence seq(5, 4, 1, {});
  std::vector<WindowRef> got;
  auto drain = [&] {
    while (auto w = seq.next()) got.push_back(*w);
  };
  for (size_t file : {2, 0, 3, 1}) {  // decoded in this order
    for (const auto& c : clips)
      if (c.file_pos == file) seq.add_clip(c);
    seq.file_complete(file);
    drain();
  }
  seq.finish_epoch();
  drain();
  ASSERT_EQ(got.size(), in_order.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], in_order[i].window) << i;
}

TEST(Plan, CursorRoundTripsThroughText) {
  PlanCursor c{3, 17, 12345678901, 40, 1};
  c.first_clip = 90;
  c.chunk_clips = 3;
  EXPECT_EQ(c.to_string(), "v2 epoch=3 file=17 chunk=12345678901 first=90 clips=3 window=40 pass=1");
  EXPECT_EQ(PlanCursor::parse(c.to_string()), c);
  EXPECT_EQ(PlanCursor::parse(PlanCursor{}.to_string()), PlanCursor{});
  PlanCursor v1 = PlanCursor::parse("v1 epoch=3 file=17 chunk=12 window=40 pass=1");  // written by older kaiod
  EXPECT_EQ(v1.chunk_index, 12);
  EXPECT_EQ(v1.first_clip, -1) << "unknown: chunk * K";
  EXPECT_EQ(v1.chunk_clips, 0);
  for (const char* bad :
       {"", "v2 epoch=0 file=0 chunk=0 window=0 pass=0", "v3 epoch=0 file=0 chunk=0 window=0 pass=0",
        "v2 epoch=0 file=0 chunk=0 first=-2 clips=0 window=0 pass=0", "v1 epoch=0 file=0 chunk=0 window=0",
        "v1 epoch=-1 file=0 chunk=0 window=0 pass=0", "v1 epoch=0 file=0 chunk=0 window=0 pass=0 x"}) {
    try {
      PlanCursor::parse(bad);
      FAIL() << bad;
    } catch (const kaio::Error& e) {
      EXPECT_EQ(e.kind(), kaio::ErrorKind::corrupt);
    }
  }
}

TEST(Plan, ResumingFromASavedCursorTrainsTheSameSuffix) {
  auto clips = sample_clips(11);
  const int k = 4, repeat = 3;
  auto steps = full_run(99, k, repeat, clips, 2);
  for (size_t kill_at = 0; kill_at < steps.size(); ++kill_at) {
    auto restored = PlanCursor::parse(steps[kill_at].before.to_string());  // as read back from the ledger
    WindowSequence resumed(99, k, repeat, restored);
    for (const auto& c : clips) resumed.add_clip(c);  // the whole epoch again, from the ledger
    resumed.finish_epoch();
    std::vector<WindowRef> suffix;
    while (auto w = resumed.next()) suffix.push_back(*w);
    ASSERT_EQ(suffix.size(), steps.size() - kill_at) << "killed at " << kill_at;
    for (size_t i = 0; i < suffix.size(); ++i)
      ASSERT_EQ(suffix[i], steps[kill_at + i].window) << "killed at " << kill_at;
  }
}

// Clips of mixed shard sizes: with a byte cap, a chunk closes after the clip
// that reaches the cap, so no chunk holds more than the cap plus one clip.
// Resumed at every window with the same cap the suffix is the same; resumed
// with another cap (a new storage.budget) the chunk in progress keeps its
// clips, and every remaining window is still trained exactly once.
TEST(Plan, ByteCapClosesChunksEarlyAndAResumeKeepsTheChunkInProgress) {
  auto clips = sample_clips(23);
  for (size_t i = 0; i < clips.size(); ++i) clips[i].bytes = 100 + (i * 37 % 7) * 150;
  const int k = 6, repeat = 2;
  const uint64_t cap = 600;
  std::map<int64_t, std::vector<std::string>> chunks;
  WindowSequence seq(
      5, k, repeat, PlanCursor{},
      [&](int, int64_t chunk, const std::vector<ClipWindows>& in) {
        for (const auto& c : in) chunks[chunk].push_back(c.clip);
      },
      cap);
  for (const auto& c : clips) seq.add_clip(c);
  seq.finish_epoch();
  while (seq.next()) {
  }
  std::map<std::string, uint64_t> bytes;
  for (const auto& c : clips) bytes[c.clip] = c.bytes;
  size_t in_chunks = 0;
  for (const auto& [index, ids] : chunks) {
    uint64_t total = 0, before_last = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i + 1 == ids.size()) before_last = total;
      total += bytes[ids[i]];
    }
    EXPECT_LE(ids.size(), static_cast<size_t>(k));
    EXPECT_LT(before_last, cap) << "chunk " << index << " went on past the cap";
    in_chunks += ids.size();
  }
  EXPECT_EQ(in_chunks, clips.size());
  EXPECT_GT(chunks.size(), clips.size() / k + 1) << "the cap closed some chunks before K clips";

  auto steps = full_run(5, k, repeat, clips, 0, cap);
  for (size_t kill_at = 0; kill_at < steps.size(); ++kill_at) {
    for (uint64_t resume_cap : {cap, uint64_t{0}, uint64_t{250}}) {
      WindowSequence resumed(5, k, repeat, PlanCursor::parse(steps[kill_at].before.to_string()), {}, resume_cap);
      for (const auto& c : clips) resumed.add_clip(c);
      resumed.finish_epoch();
      std::vector<WindowRef> suffix;
      while (auto w = resumed.next()) suffix.push_back(*w);
      ASSERT_EQ(suffix.size(), steps.size() - kill_at)
          << "killed at " << kill_at << ", resumed with cap " << resume_cap;
      if (resume_cap == cap) {
        for (size_t i = 0; i < suffix.size(); ++i)
          ASSERT_EQ(suffix[i], steps[kill_at + i].window) << "killed at " << kill_at;
      }
      std::multiset<std::pair<std::string, int64_t>> want, got;
      for (size_t i = kill_at; i < steps.size(); ++i) want.insert({steps[i].window.clip, steps[i].window.window});
      for (const auto& w : suffix) got.insert({w.clip, w.window});
      ASSERT_EQ(got, want) << "killed at " << kill_at << ", resumed with cap " << resume_cap;
      // The chunk in progress keeps its clips: its windows come first, as before.
      auto chunk_end =
          std::find_if(steps.begin() + static_cast<std::ptrdiff_t>(kill_at), steps.end(),
                       [&](const Step& s) { return s.before.chunk_index != steps[kill_at].before.chunk_index; });
      if (steps[kill_at].before.chunk_clips > 0) {
        for (size_t i = 0; kill_at + i < static_cast<size_t>(chunk_end - steps.begin()); ++i)
          ASSERT_EQ(suffix[i], steps[kill_at + i].window)
              << "killed at " << kill_at << ", resumed with cap " << resume_cap;
      }
    }
  }
}
