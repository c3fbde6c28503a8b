#include "cache/resume.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "files.h"
#include "tests/support/sandbox.h"

namespace fs = std::filesystem;
using namespace kaio::cache;
using namespace kaio::state;
using kaio::test::Sandbox;

namespace {

const std::string kRepo = "org/videos";
constexpr uint64_t kSeed = 3;
constexpr int kK = 2, kRepeat = 2, kFiles = 4, kClipsPerFile = 3;

std::string path_of(int f) {
  return "part-" + std::to_string(f) + ".tar";
}

ClipRecord record(int f, int m) {
  ClipRecord c;
  c.file_id = file_id(kRepo, path_of(f));
  c.repo_path = path_of(f);
  c.member = "v" + std::to_string(m) + ".mp4";
  c.id = clip_id(kRepo, c.repo_path, c.member);
  c.member_index = m;
  c.windows = 1 + (f + m) % 3;
  c.shard_path = "/nowhere/" + c.id;
  return c;
}

// Decoding file index f (at plan position pos) hands its clips to the sequence.
void decode_into(WindowSequence& seq, int f, size_t pos) {
  for (int m = 0; m < kClipsPerFile; ++m) {
    auto c = record(f, m);
    seq.add_clip({c.id, c.windows, pos});
  }
  seq.file_complete(pos);
}

}  // namespace

TEST(Plan, ResumeFromTheLedgerTrainsTheSameSuffixAsAnUninterruptedRun) {
  Sandbox dir("resume");
  auto ledger = Ledger::open(dir.path());
  std::vector<FileRecord> files;
  for (int f = 0; f < kFiles; ++f) files.push_back({"", path_of(f), 1, "", ""});
  ledger.upsert_files(kRepo, files);
  auto listed = ledger.files();
  auto order = file_order(kSeed, 0, listed.size());
  auto index_of = [&](size_t pos) {  // file index (0..3) at a plan position
    return std::stoi(listed[order[pos]].path.substr(5));
  };

  // The uninterrupted run.
  WindowSequence reference(kSeed, kK, kRepeat, {});
  for (size_t pos = 0; pos < order.size(); ++pos) decode_into(reference, index_of(pos), pos);
  reference.finish_epoch();
  std::vector<PlanCursor> cursors;
  std::vector<WindowRef> windows;
  for (;;) {
    cursors.push_back(reference.cursor());
    auto w = reference.next();
    if (!w) break;
    windows.push_back(*w);
  }

  // The killed run got through plan positions 0 and 1 and three windows into chunk 2.
  size_t kill_at = 0;
  while (cursors[kill_at].chunk_index < 2) ++kill_at;
  kill_at += 3;
  for (size_t pos = 0; pos < 2; ++pos) {
    int f = index_of(pos);
    std::vector<ClipRecord> clips;
    for (int m = 0; m < kClipsPerFile; ++m) clips.push_back(record(f, m));
    ledger.add_clips(kRepo, clips);
    ledger.set_file_state(listed[order[pos]].id, 0, FileState::done);
  }
  ledger.set_clips_state({record(index_of(0), 0).id}, ClipState::deleted);  // trained and gone
  // Plan position 2 was mid-download; its rows are stale ones from an earlier epoch.
  std::vector<ClipRecord> stale;
  for (int m = 0; m < kClipsPerFile; ++m) stale.push_back(record(index_of(2), m));
  ledger.add_clips(kRepo, stale);
  ledger.set_file_state(listed[order[2]].id, 0, FileState::downloading);
  ledger.save_position({0, 0, 0, cursors[kill_at].to_string()});

  // The restart.
  auto cursor = PlanCursor::parse(ledger.position().cursor);
  WindowSequence resumed(kSeed, kK, kRepeat, cursor);
  EXPECT_EQ(feed_decoded_files(ledger, 0, order, resumed), (std::vector<size_t>{0, 1}));
  std::vector<WindowRef> suffix;
  auto drain = [&] {
    while (auto w = resumed.next()) suffix.push_back(*w);
  };
  drain();
  decode_into(resumed, index_of(3), 3);  // finishes before position 2: must wait for it
  drain();
  decode_into(resumed, index_of(2), 2);
  resumed.finish_epoch();
  drain();
  ASSERT_EQ(suffix.size(), windows.size() - kill_at);
  for (size_t i = 0; i < suffix.size(); ++i) EXPECT_EQ(suffix[i], windows[kill_at + i]) << i;

  EXPECT_THROW(feed_decoded_files(ledger, 0, file_order(kSeed, 0, 2), resumed), kaio::Error);
}
