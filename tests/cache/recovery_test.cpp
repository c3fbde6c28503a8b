#include "cache/recovery.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>

#include "files.h"
#include "tests/support/sandbox.h"

namespace fs = std::filesystem;
using namespace kaio::state;
using kaio::cache::recover;
using kaio::test::Sandbox;
using kaio::testing::write_bytes;

namespace {

const std::string kRepo = "org/videos";

ClipRecord clip_for(const std::string& file_path, int index, const fs::path& shard) {
  ClipRecord c;
  c.file_id = file_id(kRepo, file_path);
  c.repo_path = file_path;
  c.member = "v" + std::to_string(index) + ".mp4";
  c.member_index = index;
  c.windows = 3;
  c.shard_path = shard;
  c.shard_bytes = 1000;
  return c;
}

// Many empty files, fast: hard links to a few inodes (creating 100k inodes takes
// ~20 s on a busy disk; each link is still its own directory entry to recover).
class Touch {
 public:
  explicit Touch(const fs::path& dir) : dir_(dir) { fs::create_directories(dir); }
  void operator()(const fs::path& p) {
    if (links_++ % 10000 == 0) {  // ext4 allows 65000 links per inode
      inode_ = dir_ / std::to_string(links_);
      int fd = ::open(inode_.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      ASSERT_GE(fd, 0) << inode_;
      ::close(fd);
    }
    ASSERT_EQ(::link(inode_.c_str(), p.c_str()), 0) << p;
  }

 private:
  fs::path dir_;
  fs::path inode_;
  int links_ = 0;
};

}  // namespace

TEST(Recovery, DeletesOrphansKeepsPartsAndRollsBackWhatIsMissing) {
  Sandbox root("recovery");
  fs::path cache = root.path() / "cache", state = root.path() / "state";
  auto ledger = Ledger::open(state);
  ledger.upsert_files(kRepo, {{"", "a.tar", 1, "", ""},
                              {"", "b.tar", 1, "", ""},
                              {"", "c.tar", 1, "", ""},
                              {"", "d.tar", 1, "", ""},
                              {"", "e.tar", 1, "", ""}});
  auto id = [](const char* p) { return file_id(kRepo, p); };
  // a.tar: decoded into two clips, one shard lost. b.tar: decoded, both shards there.
  ledger.set_file_state(id("a.tar"), 0, FileState::decoded);
  ledger.set_file_state(id("b.tar"), 0, FileState::decoded);
  ledger.add_clips(kRepo, {clip_for("a.tar", 0, cache / "shards/a0"), clip_for("a.tar", 1, cache / "shards/a1"),
                           clip_for("b.tar", 0, cache / "shards/b0"), clip_for("b.tar", 1, cache / "shards/b1")});
  write_bytes(cache / "shards/a0", 1000);
  write_bytes(cache / "shards/b0", 1000);
  write_bytes(cache / "shards/b1", 1000);
  // c.tar: mid-download with a resumable .part. d.tar: downloaded but gone. e.tar: extracting, archive present.
  ledger.set_file_state(id("c.tar"), 0, FileState::downloading);
  ledger.set_file_local_path(id("c.tar"), 0, cache / "downloads/c.tar");
  write_bytes(cache / "downloads/c.tar.part", 5000);
  ledger.set_file_state(id("d.tar"), 0, FileState::downloaded);
  ledger.set_file_local_path(id("d.tar"), 0, cache / "downloads/d.tar");
  ledger.set_file_state(id("e.tar"), 0, FileState::extracting);
  ledger.set_file_local_path(id("e.tar"), 0, cache / "downloads/e.tar");
  write_bytes(cache / "downloads/e.tar", 3000);
  // Leftovers nobody vouches for, and checkpoints.
  write_bytes(cache / "members/e.tar/v0.mp4", 7000);
  write_bytes(cache / "downloads/zzz.tar.part", 2000);
  write_bytes(cache / "shards/stray", 100);
  write_bytes(state / "checkpoints/ckpt-200.bin", 4000);
  write_bytes(state / "checkpoints/ckpt-400.bin.tmp", 4000);
  ledger.add_checkpoint({200, state / "checkpoints/ckpt-200.bin", 4000, 1, "c"});
  ledger.add_checkpoint({100, state / "checkpoints/ckpt-100.bin", 4000, 1, "c"});

  auto report = recover(ledger, cache, state);
  std::printf("%s\n", report.summary().c_str());

  EXPECT_EQ(report.orphans_deleted, 3);
  EXPECT_FALSE(fs::exists(cache / "members/e.tar/v0.mp4"));
  EXPECT_FALSE(fs::exists(cache / "downloads/zzz.tar.part"));
  EXPECT_FALSE(fs::exists(cache / "shards/stray"));
  EXPECT_EQ(report.temporaries_deleted, 1);
  EXPECT_FALSE(fs::exists(state / "checkpoints/ckpt-400.bin.tmp"));
  EXPECT_EQ(report.parts_kept, 1);
  EXPECT_EQ(report.part_bytes, 5000u);
  EXPECT_TRUE(fs::exists(cache / "downloads/c.tar.part"));
  EXPECT_TRUE(fs::exists(cache / "shards/a0"));
  EXPECT_TRUE(fs::exists(state / "checkpoints/ckpt-200.bin"));
  EXPECT_TRUE(fs::exists(state / "kaio.db"));
  EXPECT_TRUE(fs::exists(state / "lock"));

  EXPECT_EQ(report.shards_missing, 1);
  EXPECT_EQ(ledger.clip(clip_id(kRepo, "a.tar", "v1.mp4"))->state, ClipState::deleted);
  EXPECT_EQ(ledger.clip(clip_id(kRepo, "a.tar", "v0.mp4"))->state, ClipState::ready);
  EXPECT_EQ(ledger.file_status(id("a.tar"), 0)->state, FileState::pending);
  EXPECT_EQ(ledger.file_status(id("b.tar"), 0)->state, FileState::decoded);
  EXPECT_EQ(ledger.file_status(id("c.tar"), 0)->state, FileState::pending);
  EXPECT_EQ(ledger.file_status(id("d.tar"), 0)->state, FileState::pending);
  EXPECT_EQ(ledger.file_status(id("e.tar"), 0)->state, FileState::downloaded);
  EXPECT_EQ(report.files_rolled_back, 4);
  EXPECT_EQ(report.checkpoints_missing, 1);
  ASSERT_EQ(ledger.checkpoints().size(), 1u);
  EXPECT_EQ(ledger.checkpoints()[0].step, 200);

  auto again = recover(ledger, cache, state);  // idempotent
  EXPECT_EQ(again.orphans_deleted + again.temporaries_deleted + again.shards_missing + again.checkpoints_missing, 0);
}

TEST(Recovery, HundredThousandClipsInOneTransaction) {
  Sandbox root("recovery100k");
  fs::path cache = root.path() / "cache", state = root.path() / "state";
  auto ledger = Ledger::open(state);
  constexpr int kFiles = 1000, kClipsPerFile = 100;
  std::vector<FileRecord> files;
  for (int f = 0; f < kFiles; ++f) files.push_back({"", "part-" + std::to_string(f) + ".tar", 1, "", ""});
  ledger.upsert_files(kRepo, files);
  Touch touch(root.path() / "inodes");
  std::vector<ClipRecord> clips;
  ledger.transaction([&] {
    for (const auto& f : files) ledger.set_file_state(file_id(kRepo, f.path), 0, FileState::decoded);
  });
  for (int f = 0; f < kFiles; ++f) {
    fs::create_directories(cache / std::to_string(f));
    for (int m = 0; m < kClipsPerFile; ++m) {
      fs::path shard = cache / std::to_string(f) / std::to_string(m);
      clips.push_back(clip_for(files[f].path, m, shard));
      if (f % 100 != 7 || m != 0) touch(shard);  // every 100th file lost one shard
    }
  }
  ledger.add_clips(kRepo, clips);
  fs::create_directories(cache / "orphans");
  for (int i = 0; i < 500; ++i) touch(cache / "orphans" / std::to_string(i));

  auto start = std::chrono::steady_clock::now();
  auto report = recover(ledger, cache, state);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("recovery of %d clips took %.3f s: %s\n", kFiles * kClipsPerFile, seconds, report.summary().c_str());

  EXPECT_EQ(report.orphans_deleted, 500);
  EXPECT_EQ(report.shards_missing, 10);
  EXPECT_EQ(report.files_rolled_back, 10);
  EXPECT_EQ(ledger.file_counts(0)[FileState::pending], 10);
  EXPECT_EQ(ledger.clip_counts()[ClipState::ready], kFiles * kClipsPerFile - 10);
  EXPECT_EQ(ledger.file_status(file_id(kRepo, "part-107.tar"), 0)->state, FileState::pending);
}

TEST(Recovery, StateFolderInsideOrEqualToTheCacheKeepsTheLedger) {
  for (const char* state_sub : {"state", ""}) {
    Sandbox root("recovery-nested");
    fs::path cache = root.path() / "cache", state = cache / state_sub;
    auto ledger = Ledger::open(state);
    ledger.upsert_files(kRepo, {{"", "a.tar", 1, "", ""}});
    ledger.set_file_state(file_id(kRepo, "a.tar"), 0, FileState::downloading);
    ledger.set_file_local_path(file_id(kRepo, "a.tar"), 0, cache / "a.tar");
    write_bytes(cache / "a.tar.part", 100);
    write_bytes(cache / "junk", 100);
    auto report = recover(ledger, cache, state);
    EXPECT_EQ(report.orphans_deleted, 1) << state_sub;
    EXPECT_EQ(report.parts_kept, 1) << state_sub;
    EXPECT_TRUE(fs::exists(state / "kaio.db"));
    EXPECT_TRUE(fs::exists(state / "lock"));
    EXPECT_EQ(ledger.counter("anything"), 0);  // the ledger still works
  }
}

// Issue 14, item 9: a split download records each part's progress in
// "<download>.part.ranges" (fetch/downloader.cpp). Recovery deleted that
// sidecar as unknown, so the downloader took the scattered .part for a done
// prefix, the hash failed and the whole file was fetched again. The sidecar of
// a vouched download with its .part is kept; one without its .part, or of a
// download nobody vouches for, goes.
TEST(Recovery, KeepsTheProgressFileOfASplitDownloadBesideItsPart) {
  Sandbox root("recovery-split");
  fs::path cache = root.path() / "cache", state = root.path() / "state";
  auto ledger = Ledger::open(state);
  ledger.upsert_files(kRepo, {{"", "big.tar", 1 << 20, "", ""}, {"", "gone.tar", 1 << 20, "", ""}});
  for (const char* name : {"big.tar", "gone.tar"}) {
    ledger.set_file_state(file_id(kRepo, name), 0, FileState::downloading);
    ledger.set_file_local_path(file_id(kRepo, name), 0, cache / "downloads" / name);
  }
  const std::string ranges = R"({"etag":"e","parts":[[0,1000,262144],[262144,263144,524288]],"size":1048576})";
  write_bytes(cache / "downloads/big.tar.part", 263144);
  {
    std::ofstream out(cache / "downloads/big.tar.part.ranges");
    out << ranges;
  }
  write_bytes(cache / "downloads/gone.tar.part.ranges", 50);   // its .part is gone: nothing to resume
  write_bytes(cache / "downloads/stray.tar.part.ranges", 50);  // no download of that name

  auto report = recover(ledger, cache, state);
  std::printf("%s\n", report.summary().c_str());

  EXPECT_TRUE(fs::exists(cache / "downloads/big.tar.part"));
  ASSERT_TRUE(fs::exists(cache / "downloads/big.tar.part.ranges")) << "the split download's progress was deleted";
  std::ifstream in(cache / "downloads/big.tar.part.ranges");
  std::string kept((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(kept, ranges);
  EXPECT_EQ(report.parts_kept, 1);
  EXPECT_FALSE(fs::exists(cache / "downloads/gone.tar.part.ranges"));
  EXPECT_FALSE(fs::exists(cache / "downloads/stray.tar.part.ranges"));
  EXPECT_EQ(report.orphans_deleted, 2);
  EXPECT_EQ(ledger.file_status(file_id(kRepo, "big.tar"), 0)->state, FileState::pending);

  auto again = recover(ledger, cache, state);  // idempotent: the sidecar survives a second start too
  EXPECT_TRUE(fs::exists(cache / "downloads/big.tar.part.ranges"));
  EXPECT_EQ(again.orphans_deleted, 0);
}
