#include "state/ledger.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <thread>

#include "common/error.h"
#include "tests/support/sandbox.h"

namespace fs = std::filesystem;
using namespace kaio::state;
using kaio::test::Sandbox;

namespace {

// Reads one integer pragma through a separate raw connection.
std::string raw_pragma(const fs::path& db_file, const std::string& pragma) {
  sqlite3* db = nullptr;
  sqlite3_open(db_file.c_str(), &db);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> owned(db, &sqlite3_close);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, ("PRAGMA " + pragma).c_str(), -1, &st, nullptr);
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(st, &sqlite3_finalize);
  std::string out;
  if (sqlite3_step(st) == SQLITE_ROW) out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
  return out;
}

void raw_exec(const fs::path& db_file, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open(db_file.c_str(), &db);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> owned(db, &sqlite3_close);
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sql;
}

const std::string kRepo = "org/videos";

std::string printf_id(int v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016x", v);
  return buf;
}

}  // namespace

TEST(Ledger, MigratesFromVersionZeroToWalDatabase) {
  Sandbox dir{"ledger"};
  raw_exec(dir.path() / "kaio.db", "PRAGMA user_version = 0");
  {
    auto ledger = Ledger::open(dir.path());
    EXPECT_EQ(ledger.schema_version(), Ledger::kSchemaVersion);
    ledger.set_paused(true, "operator");  // table from migration 2
  }
  EXPECT_EQ(raw_pragma(dir.path() / "kaio.db", "journal_mode"), "wal");
  EXPECT_EQ(raw_pragma(dir.path() / "kaio.db", "user_version"), std::to_string(Ledger::kSchemaVersion));
  auto reopened = Ledger::open(dir.path());
  EXPECT_TRUE(reopened.pause_state().paused);
  EXPECT_EQ(reopened.pause_state().reason, "operator");
}

// A folder written by schema version 1 (before plan chunks and the pause flag)
// is migrated in place and keeps its rows.
TEST(Ledger, MigratesAVersionOneDatabaseKeepingItsRows) {
  Sandbox dir{"ledger"};
  raw_exec(dir.path() / "kaio.db", R"sql(
CREATE TABLE source(id INTEGER PRIMARY KEY CHECK (id = 1), endpoint TEXT NOT NULL, repo TEXT NOT NULL,
                    revision TEXT NOT NULL, commit_sha TEXT NOT NULL, selection TEXT NOT NULL);
CREATE TABLE files(id TEXT PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
                   git_oid TEXT NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE file_states(file_id TEXT NOT NULL REFERENCES files(id), epoch INTEGER NOT NULL,
                         state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
                         local_path TEXT NOT NULL DEFAULT '', updated INTEGER NOT NULL,
                         PRIMARY KEY (file_id, epoch));
CREATE TABLE clips(id TEXT PRIMARY KEY, file_id TEXT NOT NULL, member TEXT NOT NULL, member_index INTEGER NOT NULL,
                   caption TEXT NOT NULL, windows INTEGER NOT NULL, shard_path TEXT NOT NULL,
                   shard_bytes INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '');
CREATE INDEX clips_by_state ON clips(state);
CREATE INDEX clips_by_file ON clips(file_id, member_index);
CREATE TABLE position(id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL, step INTEGER NOT NULL,
                      samples INTEGER NOT NULL, cursor TEXT NOT NULL);
CREATE TABLE checkpoints(path TEXT PRIMARY KEY, step INTEGER NOT NULL, bytes INTEGER NOT NULL,
                         created INTEGER NOT NULL, cursor TEXT NOT NULL);
CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO clips VALUES ('00000000000000aa', 'f', 'a.mp4', 0, 'a dog', 4, '/c/a', 10, 'ready', '');
INSERT INTO position VALUES (1, 2, 700, 5600, 'v1 epoch=2 file=0 chunk=3 window=0 pass=0');
PRAGMA user_version = 1;
)sql");
  auto ledger = Ledger::open(dir.path());
  EXPECT_EQ(ledger.schema_version(), Ledger::kSchemaVersion);
  auto clip = ledger.clip("00000000000000aa");
  ASSERT_TRUE(clip.has_value());
  EXPECT_EQ(clip->caption, "a dog");
  EXPECT_FALSE(clip->plan_chunk.has_value());
  EXPECT_EQ(ledger.position().step, 700);
  ledger.assign_chunk({clip->id}, 2, 1);
  EXPECT_EQ(ledger.clips_before(2, 3).size(), 1u);
  EXPECT_FALSE(ledger.pause_state().paused);
}

TEST(Ledger, RefusesANewerSchema) {
  Sandbox dir{"ledger"};
  raw_exec(dir.path() / "kaio.db", "PRAGMA user_version = 99");
  try {
    Ledger::open(dir.path());
    FAIL() << "opened a schema from the future";
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::corrupt);
    EXPECT_NE(std::string(e.what()).find("version 99"), std::string::npos) << e.what();
  }
}

TEST(Ledger, FileStatesMoveForwardAndCountFailures) {
  Sandbox dir{"ledger"};
  auto ledger = Ledger::open(dir.path());
  ledger.upsert_files(kRepo, {{"", "a/part-000.tar", 100, "oid-a", "sha-a"}, {"", "b.tar", 200, "oid-b", ""}});
  auto id = file_id(kRepo, "a/part-000.tar");
  for (auto s : {FileState::pending, FileState::downloading, FileState::downloaded, FileState::extracting,
                 FileState::decoded, FileState::done})
    ledger.set_file_state(id, 0, s);
  EXPECT_EQ(ledger.file_status(id, 0)->state, FileState::done);
  EXPECT_THROW(ledger.set_file_state(id, 0, FileState::downloading), kaio::Error);

  auto other = file_id(kRepo, "b.tar");
  ledger.set_file_state(other, 0, FileState::downloading);
  ledger.set_file_state(other, 0, FileState::failed, "HTTP 500 on b.tar");
  ledger.set_file_state(other, 0, FileState::pending);
  ledger.set_file_state(other, 0, FileState::failed, "sha256 mismatch");
  auto st = ledger.file_status(other, 0);
  EXPECT_EQ(st->attempts, 2);
  EXPECT_EQ(st->reason, "sha256 mismatch");
  EXPECT_EQ(st->file.path, "b.tar");

  auto counts = ledger.file_counts(0);
  EXPECT_EQ(counts[FileState::done], 1);
  EXPECT_EQ(counts[FileState::failed], 1);
  EXPECT_EQ(ledger.list_files(0, FileState::failed).size(), 1u);
  EXPECT_EQ(ledger.list_files(0).size(), 2u);
  EXPECT_FALSE(ledger.file_status(id, 1).has_value());  // epochs are separate
}

TEST(Ledger, PinsTheCommitAcrossReopen) {
  Sandbox dir{"ledger"};
  SourceRecord first{"http://127.0.0.1:1", kRepo, "main", "aaaa1111", R"({"include":["*.tar"]})"};
  {
    auto ledger = Ledger::open(dir.path());
    EXPECT_EQ(ledger.pin_source(first).commit_sha, "aaaa1111");
  }
  auto ledger = Ledger::open(dir.path());
  SourceRecord moved = first;
  moved.commit_sha = "bbbb2222";  // the branch moved since
  EXPECT_EQ(ledger.pin_source(moved).commit_sha, "aaaa1111");
  SourceRecord other = first;
  other.repo = "org/other";
  try {
    ledger.pin_source(other);
    FAIL();
  } catch (const kaio::Error& e) {
    EXPECT_EQ(e.kind(), kaio::ErrorKind::config);
    EXPECT_NE(std::string(e.what()).find("org/other"), std::string::npos);
  }
}

TEST(Ledger, IdsAreStableAcrossRestartsAndDistinct) {
  Sandbox dir{"ledger"};
  EXPECT_EQ(file_id(kRepo, "x.tar"), file_id(kRepo, "x.tar"));
  EXPECT_NE(file_id(kRepo, "x.tar"), file_id("org/other", "x.tar"));
  EXPECT_NE(clip_id(kRepo, "x.tar", "a.mp4"), clip_id(kRepo, "x.tar", "b.mp4"));
  EXPECT_EQ(file_id(kRepo, "x.tar").size(), 16u);
  {
    auto ledger = Ledger::open(dir.path());
    ledger.upsert_files(kRepo, {{"", "z.tar", 1, "", ""}, {"", "x.tar", 1, "", ""}});
    ClipRecord c;
    c.file_id = file_id(kRepo, "x.tar");
    c.repo_path = "x.tar";
    c.member = "a.mp4";
    ledger.add_clips(kRepo, {c});
  }
  auto ledger = Ledger::open(dir.path());
  auto files = ledger.files();
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].path, "x.tar");  // path order, not insertion order
  EXPECT_EQ(files[0].id, file_id(kRepo, "x.tar"));
  auto c = ledger.clip(clip_id(kRepo, "x.tar", "a.mp4"));
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->repo_path, "x.tar");
}

TEST(Ledger, SecondProcessIsToldWhoHoldsTheFolder) {
  Sandbox dir{"ledger"};
  auto ledger = Ledger::open(dir.path());
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    std::string msg = "opened";
    try {
      Ledger::open(dir.path());
    } catch (const kaio::Error& e) {
      msg = e.what();
    }
    (void)!::write(fds[1], msg.data(), msg.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[512];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(msg, "another kaiod (pid " + std::to_string(::getpid()) + ") is using " + dir.path().string());
}

TEST(Ledger, CommittedRowsSurviveKill9AndPartialTransactionsVanish) {
  Sandbox dir{"ledger"};
  constexpr int kBatch = 20;
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(fds[0]);
    auto ledger = Ledger::open(dir.path());
    for (int batch = 0;; ++batch) {
      ledger.transaction([&] {
        for (int i = 0; i < kBatch; ++i) {
          ledger.add_counter("batch" + std::to_string(batch), 1);
          if (batch == 40 && i == kBatch / 2) ::raise(SIGKILL);  // dies inside a transaction
        }
      });
      (void)!::write(fds[1], &batch, sizeof batch);  // only after COMMIT returned
    }
  }
  ::close(fds[1]);
  int last = -1, v;
  while (::read(fds[0], &v, sizeof v) == sizeof v) last = v;
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  EXPECT_EQ(last, 39);

  auto ledger = Ledger::open(dir.path());  // the lock died with the child
  auto counters = ledger.counters();
  for (int b = 0; b <= last; ++b) EXPECT_EQ(counters["batch" + std::to_string(b)], kBatch) << "batch " << b;
  EXPECT_EQ(counters.count("batch40"), 0u);
  EXPECT_EQ(counters.size(), static_cast<size_t>(last + 1));
}

TEST(Ledger, TransactionRollsBackWhenTheBodyThrows) {
  Sandbox dir{"ledger"};
  auto ledger = Ledger::open(dir.path());
  EXPECT_THROW(ledger.transaction([&] {
    ledger.add_counter("clips_decoded", 5);
    throw std::runtime_error("decode failed");
  }),
               std::runtime_error);
  EXPECT_EQ(ledger.counter("clips_decoded"), 0);
  ledger.add_counter("clips_decoded", 2);
  EXPECT_EQ(ledger.counter("clips_decoded"), 2);
}

TEST(Ledger, ConcurrentThreadsAllLand) {
  Sandbox dir{"ledger"};
  auto ledger = Ledger::open(dir.path());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) ledger.transaction([&] { ledger.add_counter("windows_trained", 1); });
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ledger.counter("windows_trained"), 400);
}

TEST(Ledger, ClipsCheckpointsAndPositionRoundTrip) {
  Sandbox dir{"ledger"};
  auto ledger = Ledger::open(dir.path());
  ledger.upsert_files(kRepo, {{"", "a.tar", 10, "", ""}});
  auto fid = file_id(kRepo, "a.tar");
  std::vector<ClipRecord> clips;
  for (int i = 0; i < 3; ++i) {
    ClipRecord c;
    c.file_id = fid;
    c.repo_path = "a.tar";
    c.member = "clip" + std::to_string(i) + ".mp4";
    c.member_index = 2 - i;  // archive order differs from name order
    c.windows = 4;
    c.shard_path = dir.path() / ("s" + std::to_string(i));
    c.shard_bytes = 1000;
    c.caption = "a cat";
    clips.push_back(c);
  }
  ledger.add_clips(kRepo, clips);
  auto listed = ledger.clips_of_file(fid);
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[0].member, "clip2.mp4");  // member order within the archive
  ledger.set_clip_state(listed[0].id, ClipState::failed, "truncated moov atom");
  EXPECT_EQ(ledger.clip(listed[0].id)->reason, "truncated moov atom");
  EXPECT_EQ(ledger.clip_counts()[ClipState::ready], 2);
  EXPECT_EQ(ledger.list_clips(ClipState::failed).size(), 1u);
  EXPECT_EQ(ledger.list_clips(std::nullopt, 2).size(), 2u);
  EXPECT_THROW(ledger.set_clip_state("0000000000000000", ClipState::consumed), kaio::Error);

  ledger.assign_chunk({listed[1].id}, 0, 0);
  ledger.assign_chunk({listed[2].id}, 0, 1);
  EXPECT_EQ(ledger.clips_before(0, 1).size(), 1u);
  EXPECT_EQ(ledger.clips_before(1, 0).size(), 2u);

  ledger.save_position({1, 500, 4000, "cursor-text"});
  EXPECT_EQ(ledger.position().step, 500);
  EXPECT_EQ(ledger.position().cursor, "cursor-text");
  ledger.add_checkpoint({200, dir.path() / "ckpt-200", 5000, 1, "c200"});
  ledger.add_checkpoint({100, dir.path() / "ckpt-100", 5000, 1, "c100"});
  EXPECT_EQ(ledger.checkpoints().front().step, 100);
  ledger.remove_checkpoint(dir.path() / "ckpt-100");
  EXPECT_EQ(ledger.checkpoints().size(), 1u);

  ledger.set_file_local_path(fid, 0, dir.path() / "dl/a.tar");
  auto known = ledger.known_paths();
  EXPECT_EQ(known.shards.size(), 2u);  // the failed clip's shard is not vouched for
  EXPECT_EQ(known.checkpoints.size(), 1u);
  ASSERT_EQ(known.downloads.size(), 1u);
  EXPECT_EQ(known.downloads[0], dir.path() / "dl/a.tar");
}

// Killed from outside at arbitrary points, five times over the same folder:
// every batch the child reported committed is there in full, nothing partial.
TEST(Ledger, SurvivesRepeatedKill9FromOutside) {
  Sandbox dir{"ledger"};
  constexpr int kBatch = 10;
  int committed_total = 0;
  for (int round = 0; round < 5; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(fds[0]);
      auto ledger = Ledger::open(dir.path());
      for (int batch = committed_total;; ++batch) {
        ledger.transaction([&] {
          for (int i = 0; i < kBatch; ++i) ledger.add_counter("batch" + std::to_string(batch), 1);
        });
        (void)!::write(fds[1], &batch, sizeof batch);
      }
    }
    ::close(fds[1]);
    int last = -1, v;
    int stop_after = 5 + round * 7;  // different kill points each round
    while (::read(fds[0], &v, sizeof v) == sizeof v) {
      last = v;
      if (v >= committed_total + stop_after) {
        ::kill(child, SIGKILL);
        break;
      }
    }
    while (::read(fds[0], &v, sizeof v) == sizeof v) last = v;  // reported before it died
    ::close(fds[0]);
    ::waitpid(child, nullptr, 0);
    ASSERT_GE(last, committed_total);

    auto ledger = Ledger::open(dir.path());
    auto counters = ledger.counters();
    for (int b = 0; b <= last; ++b) ASSERT_EQ(counters["batch" + std::to_string(b)], kBatch) << "batch " << b;
    // At most one batch past the last report: committed, killed before it could say so.
    for (const auto& [name, value] : counters) {
      int b = std::stoi(name.substr(5));
      EXPECT_LE(b, last + 1);
      EXPECT_EQ(value, kBatch) << name << " is partial";
    }
    committed_total = static_cast<int>(counters.size());
  }
}

// Issue 14, item 8: compact rows answer every reader as the full rows did.
TEST(Ledger, CompactRowsReadAsBeforeForEveryReader) {
  Sandbox dir{"ledger"};
  auto ledger = Ledger::open(dir.path());
  EXPECT_EQ(raw_pragma(dir.path() / "kaio.db", "auto_vacuum"), "2");  // incremental, from the first table on
  ledger.upsert_files(kRepo, {{"", "a.tar", 10, "", ""}, {"", "b.tar", 10, "", ""}});
  auto fa = file_id(kRepo, "a.tar");
  std::vector<ClipRecord> clips;
  for (int i = 0; i < 6; ++i) {
    ClipRecord c;
    c.file_id = fa;
    c.repo_path = "a.tar";
    c.member = "clip" + std::to_string(i) + ".mp4";
    c.member_index = i;
    c.windows = 10 + i;
    c.caption = std::string(300, 'c');
    c.shard_path = dir.path() / ("s" + std::to_string(i));
    c.shard_bytes = 1000;
    clips.push_back(c);
  }
  ledger.add_clips(kRepo, clips);
  std::vector<ClipId> ids;
  for (const auto& c : ledger.clips_of_file(fa)) ids.push_back(c.id);
  ASSERT_EQ(ids.size(), 6u);
  // Clips 0, 2 and 4 trained in chunks 0 and 1, covered and deleted; 1 failed; 3 and 5 ready.
  ledger.assign_chunk({ids[0], ids[2]}, 0, 0);
  ledger.assign_chunk({ids[4]}, 0, 1);
  ledger.set_clips_state({ids[0], ids[2], ids[4]}, ClipState::committed);
  ledger.set_clips_state({ids[0], ids[2], ids[4]}, ClipState::deleted, "covered by checkpoint at x");
  ledger.set_clip_state(ids[1], ClipState::failed, "truncated moov atom");
  ledger.save_position({0, 100, 800, "c"});
  EXPECT_THROW(ledger.transaction([&] { ledger.compact_after_checkpoint(); }), kaio::Error);
  auto r = ledger.compact_after_checkpoint();
  EXPECT_EQ(r.clips_compacted, 3);
  EXPECT_GT(ledger.file_bytes(), 0u);

  auto c2 = ledger.clip(ids[2]);
  ASSERT_TRUE(c2.has_value());
  EXPECT_TRUE(c2->compacted);
  EXPECT_EQ(c2->state, ClipState::deleted);
  EXPECT_EQ(c2->windows, 12);
  EXPECT_EQ(c2->plan_epoch, 0);
  EXPECT_EQ(c2->plan_chunk, 0);
  EXPECT_EQ(c2->file_id, fa);
  EXPECT_EQ(c2->repo_path, "a.tar");
  EXPECT_EQ(c2->member_index, 2);
  EXPECT_EQ(c2->member, "#2");
  EXPECT_TRUE(c2->caption.empty());
  EXPECT_EQ(ledger.clip(ids[1])->reason, "truncated moov atom");  // failed clips keep their reason
  EXPECT_EQ(ledger.clip(ids[3])->caption, std::string(300, 'c'));

  auto of_file = ledger.clips_of_file(fa);  // the plan's resume: live and compact rows in member order
  ASSERT_EQ(of_file.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(of_file[static_cast<size_t>(i)].id, ids[static_cast<size_t>(i)]);
    EXPECT_EQ(of_file[static_cast<size_t>(i)].windows, 10 + i);
  }
  auto counts = ledger.clip_counts();
  EXPECT_EQ(counts[ClipState::deleted], 3);
  EXPECT_EQ(counts[ClipState::ready], 2);
  EXPECT_EQ(counts[ClipState::failed], 1);
  auto deleted = ledger.list_clips(ClipState::deleted);
  ASSERT_EQ(deleted.size(), 3u);
  EXPECT_EQ(deleted[0].repo_path + ":" + deleted[0].member, "a.tar:#0");  // what kaioctl ls prints
  EXPECT_EQ(ledger.list_clips().size(), 6u);
  EXPECT_EQ(ledger.list_clips(std::nullopt, 4).size(), 4u);
  EXPECT_TRUE(ledger.clips_before(1, 0).empty());
  EXPECT_EQ(ledger.known_paths().shards.size(), 2u);

  // Readers of the file itself (sqlite3 -readonly in the reliability tests) see the same clips.
  EXPECT_EQ(raw_pragma(dir.path() / "kaio.db", "auto_vacuum"), "2");
  EXPECT_EQ(raw_pragma(dir.path() / "kaio.db", "user_version"), std::to_string(Ledger::kSchemaVersion));
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open_v2((dir.path() / "kaio.db").c_str(), &raw, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  std::unique_ptr<sqlite3, decltype(&sqlite3_close)> owned(raw, &sqlite3_close);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(raw,
                               "SELECT COUNT(*), MIN(f.path) FROM clips c JOIN files f ON f.id = c.file_id "
                               "WHERE c.state = 'deleted'",
                               -1, &st, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 3);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)), "a.tar");
  sqlite3_finalize(st);

  ledger.set_clips_state({ids[4]}, ClipState::deleted, "again");  // already so: nothing to do
  EXPECT_TRUE(ledger.clip(ids[4])->compacted);
  ledger.add_clips(kRepo, {clips[4]});  // decoded again (next epoch): a live row again
  auto again = ledger.clip(ids[4]);
  EXPECT_FALSE(again->compacted);
  EXPECT_EQ(again->state, ClipState::ready);
  EXPECT_EQ(again->member, "clip4.mp4");
  EXPECT_FALSE(again->plan_epoch.has_value());
  EXPECT_EQ(ledger.clip_counts()[ClipState::deleted], 2);
  EXPECT_EQ(ledger.clips_of_file(fa).size(), 6u);
}

// A clip whose shard is lost before a checkpoint covered it is trained again
// when its file is decoded again: it must not read as trained in this epoch
// (the engine skips a clip deleted with plan_epoch == the current epoch, and the
// trainer then finds no shard for it), nor become a compact row.
TEST(Ledger, AShardLostBeforeItsCheckpointDoesNotReadAsTrained) {
  Sandbox dir{"ledger"};
  auto ledger = Ledger::open(dir.path());
  ledger.upsert_files(kRepo, {{"", "a.tar", 10, "", ""}});
  auto fa = file_id(kRepo, "a.tar");
  ledger.set_file_state(fa, 0, FileState::decoded);
  std::vector<ClipRecord> clips;
  for (int i = 0; i < 3; ++i) {
    ClipRecord c;
    c.file_id = fa;
    c.repo_path = "a.tar";
    c.member = "v" + std::to_string(i) + ".mp4";
    c.member_index = i;
    c.windows = 2;
    c.shard_path = dir.path() / ("s" + std::to_string(i));
    clips.push_back(c);
  }
  ledger.add_clips(kRepo, clips);
  ClipId committed = clip_id(kRepo, "a.tar", "v0.mp4"), consumed = clip_id(kRepo, "a.tar", "v1.mp4"),
         ready = clip_id(kRepo, "a.tar", "v2.mp4");
  ledger.assign_chunk({committed, consumed, ready}, 0, 0);
  ledger.set_clip_state(committed, ClipState::committed);
  ledger.set_clip_state(consumed, ClipState::consumed);
  EXPECT_EQ(ledger.mark_shards_missing({committed, consumed, ready}, 0), 1);
  EXPECT_EQ(ledger.clip(committed)->plan_epoch, 0);  // covered by a checkpoint: trained
  EXPECT_FALSE(ledger.clip(consumed)->plan_epoch.has_value());
  EXPECT_FALSE(ledger.clip(ready)->plan_epoch.has_value());
  EXPECT_EQ(ledger.compact_after_checkpoint().clips_compacted, 1);
  EXPECT_TRUE(ledger.clip(committed)->compacted);
  EXPECT_FALSE(ledger.clip(consumed)->compacted);
}

// A ledger written before schema 3 (every row kept, captions and all, no
// auto-vacuum) shrinks when opened: rows compacted, one VACUUM.
TEST(Ledger, UpgradesAGrownVersionTwoDatabaseToCompactRows) {
  Sandbox dir{"ledger"};
  fs::path db = dir.path() / "kaio.db";
  raw_exec(db, R"sql(
PRAGMA journal_mode = WAL;
CREATE TABLE source(id INTEGER PRIMARY KEY CHECK (id = 1), endpoint TEXT NOT NULL, repo TEXT NOT NULL,
                    revision TEXT NOT NULL, commit_sha TEXT NOT NULL, selection TEXT NOT NULL);
CREATE TABLE files(id TEXT PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
                   git_oid TEXT NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE file_states(file_id TEXT NOT NULL REFERENCES files(id), epoch INTEGER NOT NULL,
                         state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
                         local_path TEXT NOT NULL DEFAULT '', updated INTEGER NOT NULL,
                         PRIMARY KEY (file_id, epoch));
CREATE TABLE clips(id TEXT PRIMARY KEY, file_id TEXT NOT NULL, member TEXT NOT NULL, member_index INTEGER NOT NULL,
                   caption TEXT NOT NULL, windows INTEGER NOT NULL, shard_path TEXT NOT NULL,
                   shard_bytes INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '');
CREATE INDEX clips_by_state ON clips(state);
CREATE INDEX clips_by_file ON clips(file_id, member_index);
CREATE TABLE position(id INTEGER PRIMARY KEY CHECK (id = 1), epoch INTEGER NOT NULL, step INTEGER NOT NULL,
                      samples INTEGER NOT NULL, cursor TEXT NOT NULL);
CREATE TABLE checkpoints(path TEXT PRIMARY KEY, step INTEGER NOT NULL, bytes INTEGER NOT NULL,
                         created INTEGER NOT NULL, cursor TEXT NOT NULL);
CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
ALTER TABLE clips ADD COLUMN plan_epoch INTEGER;
ALTER TABLE clips ADD COLUMN plan_chunk INTEGER;
CREATE INDEX clips_by_chunk ON clips(plan_epoch, plan_chunk);
CREATE TABLE pause(id INTEGER PRIMARY KEY CHECK (id = 1), paused INTEGER NOT NULL, reason TEXT NOT NULL,
                   since INTEGER NOT NULL);
INSERT INTO files VALUES ('00000000000000f1', 'a.tar', 1, '', '');
INSERT INTO file_states VALUES ('00000000000000f1', 0, 'decoded', '', 0, '', 1), ('00000000000000f1', 1, 'decoded', '', 0, '', 1);
-- epoch 0: 3000 clips trained and deleted; epoch 1: 5000 trained and deleted, 10 ready
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 7999)
INSERT INTO clips SELECT printf('%016x', 4096 + i), '00000000000000f1', 'videos/m' || i || '.mp4', i,
  hex(randomblob(150)), 1 + i % 5, '/var/cache/kaio/shards/s' || i, 1000, 'deleted',
  'covered by checkpoint at v1 epoch=1 file=0 chunk=9 window=0 pass=0', CASE WHEN i < 3000 THEN 0 ELSE 1 END, i / 8 FROM n;
WITH RECURSIVE n(i) AS (SELECT 8000 UNION ALL SELECT i + 1 FROM n WHERE i < 8009)
INSERT INTO clips SELECT printf('%016x', 4096 + i), '00000000000000f1', 'videos/m' || i || '.mp4', i, 'a caption', 2,
  '/s' || i, 1000, 'ready', '', NULL, NULL FROM n;
INSERT INTO position VALUES (1, 1, 700, 5600, 'v1 epoch=1 file=0 chunk=9 window=0 pass=0');
PRAGMA user_version = 2;
)sql");
  EXPECT_EQ(raw_pragma(db, "auto_vacuum"), "0");
  auto size = [&] {
    uint64_t total = 0;
    for (const char* s : {"", "-wal", "-shm"})
      if (fs::exists(db.string() + s)) total += fs::file_size(db.string() + s);
    return total;
  };
  uint64_t before = size();
  auto ledger = Ledger::open(dir.path());
  uint64_t after = ledger.file_bytes();
  std::printf("schema 2 ledger of 8010 clips: %llu bytes, after the upgrade %llu bytes\n",
              static_cast<unsigned long long>(before), static_cast<unsigned long long>(after));
  EXPECT_EQ(raw_pragma(db, "auto_vacuum"), "2");
  EXPECT_LT(after, before / 5);
  auto counts = ledger.clip_counts();
  EXPECT_EQ(counts[ClipState::deleted], 5000);  // epoch 0's rows went with epoch 0
  EXPECT_EQ(counts[ClipState::ready], 10);
  auto trained = ledger.clip("0000000000001fa0");  // i = 4000: epoch 1, chunk 500
  ASSERT_TRUE(trained.has_value());
  EXPECT_TRUE(trained->compacted);
  EXPECT_EQ(trained->plan_epoch, 1);
  EXPECT_EQ(trained->plan_chunk, 500);
  EXPECT_EQ(trained->windows, 1);
  EXPECT_EQ(trained->repo_path, "a.tar");
  EXPECT_FALSE(ledger.clip("0000000000001001").has_value());  // i = 1: epoch 0
  EXPECT_EQ(ledger.clip(printf_id(4096 + 8005))->caption, "a caption");
  EXPECT_FALSE(ledger.file_status("00000000000000f1", 0).has_value());
  EXPECT_EQ(ledger.file_status("00000000000000f1", 1)->state, FileState::decoded);
  EXPECT_EQ(ledger.clips_of_file("00000000000000f1").size(), 5010u);
}
