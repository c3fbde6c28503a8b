#include "cache/retention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/fs.h"
#include "files.h"
#include "tests/support/sandbox.h"

namespace fs = std::filesystem;
using namespace kaio::cache;
using namespace kaio::state;
using kaio::test::Sandbox;
using kaio::testing::write_bytes;

namespace {

const std::string kRepo = "org/videos";

// Seven clips with shards on disk, fed through a WindowSequence (K = 3, repeat = 2).
struct Fixture {
  Sandbox root{"retention"};
  Ledger ledger = Ledger::open(root.path() / "state");
  ShardRetention retention{ledger};
  std::vector<ClipWindows> clips;
  std::map<std::string, fs::path> shards;

  Fixture() {
    ledger.upsert_files(kRepo, {{"", "a.tar", 1, "", ""}});
    std::vector<ClipRecord> records;
    for (int i = 0; i < 7; ++i) {
      ClipRecord c;
      c.file_id = file_id(kRepo, "a.tar");
      c.repo_path = "a.tar";
      c.member = "v" + std::to_string(i) + ".mp4";
      c.member_index = i;
      c.windows = 1 + i % 3;
      c.shard_path = root.path() / "cache" / c.member;
      c.shard_bytes = 5000;
      write_bytes(c.shard_path, c.shard_bytes);
      c.id = clip_id(kRepo, "a.tar", c.member);
      shards[c.id] = c.shard_path;
      clips.push_back({c.id, c.windows, 0});
      records.push_back(c);
    }
    ledger.add_clips(kRepo, records);
  }

  WindowSequence sequence(int repeat) {
    WindowSequence seq(5, 3, repeat, {}, [this](int epoch, int64_t chunk, const std::vector<ClipWindows>& formed) {
      retention.chunk_formed(epoch, chunk, formed);
    });
    for (const auto& c : clips) seq.add_clip(c);
    seq.finish_epoch();
    return seq;
  }
};

}  // namespace

// Deletion works per chunk: a clip goes once its whole chunk (every pass) is
// behind the cursor, never earlier, even if its own windows all came early.
TEST(Retention, AClipIsDeletableOnlyOnceEveryWindowOfEveryPassIsCovered) {
  Fixture f;
  const int repeat = 2;
  auto seq = f.sequence(repeat);
  std::map<std::string, int64_t> trained;
  std::map<std::string, int64_t> windows;
  for (const auto& c : f.clips) windows[c.clip] = c.windows;
  int checks = 0;
  for (;;) {
    std::set<std::string> fully_trained, chunks_behind;
    for (const auto& [clip, n] : trained)
      if (n == windows[clip] * repeat) fully_trained.insert(clip);
    for (size_t i = 0; i < f.clips.size(); ++i)
      if (static_cast<int64_t>(i / 3) < seq.cursor().chunk_index) chunks_behind.insert(f.clips[i].clip);
    auto got = f.retention.deletable_after(seq.cursor());
    std::set<std::string> got_set(got.begin(), got.end());
    EXPECT_EQ(got_set, chunks_behind) << seq.cursor().to_string();
    EXPECT_TRUE(std::includes(fully_trained.begin(), fully_trained.end(), got_set.begin(), got_set.end()))
        << "a clip with untrained windows is deletable at " << seq.cursor().to_string();
    ++checks;
    auto w = seq.next();
    if (!w) break;
    ++trained[w->clip];
  }
  EXPECT_GT(checks, 20);
  EXPECT_EQ(f.retention.deletable_after(seq.cursor()).size(), f.clips.size());
}

TEST(Retention, ShardsGoOnlyAfterACoveringCheckpoint) {
  Fixture f;
  auto seq = f.sequence(2);
  // Train chunk 0 completely and half of chunk 1.
  PlanCursor durable = seq.cursor();
  EXPECT_TRUE(f.retention.release_after_checkpoint(durable).clips.empty());
  while (seq.cursor().chunk_index == 0) {
    f.retention.consumed({seq.next()->clip});
  }
  seq.next();
  durable = seq.cursor();
  for (const auto& [id, path] : f.shards) EXPECT_TRUE(fs::exists(path));  // nothing before the checkpoint is durable

  auto released = f.retention.release_after_checkpoint(durable);
  ASSERT_EQ(released.clips.size(), 3u);  // chunk 0 = clips 0, 1, 2
  EXPECT_EQ(released.shard_bytes, 15000u);
  for (int i = 0; i < 7; ++i) {
    const auto& id = f.clips[static_cast<size_t>(i)].clip;
    EXPECT_EQ(fs::exists(f.shards[id]), i >= 3) << i;
    EXPECT_EQ(f.ledger.clip(id)->state == ClipState::deleted, i < 3) << i;
  }
  EXPECT_TRUE(f.retention.release_after_checkpoint(durable).clips.empty());  // nothing twice

  while (seq.next()) {
  }
  auto rest = f.retention.release_after_checkpoint(seq.cursor());
  EXPECT_EQ(rest.clips.size(), 4u);
  for (const auto& [id, path] : f.shards) EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(f.ledger.clip_counts()[ClipState::deleted], 7);
}

TEST(Retention, CommittedClipsWhoseShardsAreGoneAreStillMarkedDeleted) {
  Fixture f;
  auto seq = f.sequence(1);
  while (seq.next()) {
  }
  // A crash after the unlink but before the ledger said "deleted".
  f.ledger.set_clips_state({f.clips[0].clip}, ClipState::committed);
  fs::remove(f.shards[f.clips[0].clip]);
  auto released = f.retention.release_after_checkpoint(seq.cursor());
  EXPECT_EQ(released.clips.size(), 7u);
  EXPECT_EQ(released.shard_bytes, 6u * 5000u);
  EXPECT_EQ(f.ledger.clip(f.clips[0].clip)->state, ClipState::deleted);
}

TEST(Retention, CheckpointEarlyWhenTrainedShardsBlockTheNextReservation) {
  Fixture f;
  BudgetOptions o;
  o.cache_dir = f.root.path() / "cache";
  o.state_dir = f.root.path() / "state";
  o.ledger_allowance = 0;
  o.budget = 200000 + kaio::disk_usage(o.cache_dir) + kaio::disk_usage(o.state_dir);
  Budget budget(o);
  auto seq = f.sequence(1);
  while (seq.cursor().chunk_index == 0) seq.next();
  uint64_t freeable = f.retention.freeable_bytes(seq.cursor(), budget);
  EXPECT_EQ(freeable, 3 * budget.on_disk_bytes(5000));

  auto status = budget.status();
  EXPECT_FALSE(should_checkpoint_early(status, status.available / 2, freeable));  // it fits anyway
  EXPECT_TRUE(should_checkpoint_early(status, status.available + 1, freeable));
  EXPECT_FALSE(should_checkpoint_early(status, status.available + 1, 0));  // a checkpoint would free nothing
}
