// Archive reading: tar, tar.gz, zip and plain media streamed from a source;
// hostile members and bombs rejected, nothing written outside the work dir.
#include "decode/archive.h"

#include <gtest/gtest.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstring>

#include "archive_builder.h"
#include "common/error.h"
#include "counting_reserver.h"
#include "decode/file_source.h"
#include "test_util.h"
#include "tests/support/sandbox.h"

namespace kaio::decode {
namespace {

using kaio::test::Sandbox;
using testing::Entry;
using testing::Format;

const char* extension(Format f) {
  switch (f) {
    case Format::tar:
      return ".tar";
    case Format::tar_gz:
      return ".tar.gz";
    case Format::zip:
      return ".zip";
  }
  return "";
}

ArchiveReader open(const std::filesystem::path& p, ArchiveLimits limits = {}) {
  return ArchiveReader(std::make_unique<FileSource>(p), std::move(limits));
}

class ArchiveFormats : public ::testing::TestWithParam<Format> {};

TEST_P(ArchiveFormats, ReadsMatchingMembersInOrderAndSkipsOthers) {
  Sandbox dir;
  auto path = dir / (std::string("a") + extension(GetParam()));
  testing::write_archive(path, GetParam(),
                         {{"dir/", "", AE_IFDIR},
                          {"dir/one.mp4", "first"},
                          {"notes.txt", "skip me"},
                          {"dir/sub/two.mp4", std::string(200000, 'x')}});
  auto reader = open(path);
  Member m;
  ASSERT_TRUE(reader.next(m));
  EXPECT_EQ(m.path, "dir/one.mp4");
  EXPECT_EQ(m.index, 0);
  reader.extract_to(dir / "one", nullptr);
  EXPECT_EQ(testing::read_file(dir / "one"), "first");
  ASSERT_TRUE(reader.next(m));
  EXPECT_EQ(m.path, "dir/sub/two.mp4");
  EXPECT_EQ(m.index, 1);
  reader.extract_to(dir / "two", nullptr);
  EXPECT_EQ(std::filesystem::file_size(dir / "two"), 200000u);
  EXPECT_FALSE(reader.next(m));
  EXPECT_EQ(reader.skipped(), 1);
  EXPECT_FALSE(std::filesystem::exists(dir / "two.tmp"));
}

// Each hostile entry is rejected naming the archive and member; the good
// member after it is still read; nothing appears outside the work dir.
TEST_P(ArchiveFormats, HostileMembersAreRejected) {
  Sandbox dir;
  auto work = dir / "work";
  std::filesystem::create_directories(work);
  std::vector<Entry> hostile = {{"../escape.mp4", "evil"},
                                {"/tmp/kaio-absolute.mp4", "evil"},
                                {"a/../../up.mp4", "evil"},
                                {"link.mp4", "", AE_IFLNK, "/etc/passwd"}};
  if (GetParam() != Format::zip) {  // zip cannot carry hard links, devices or fifos
    hostile.push_back({"hard.mp4", "", AE_IFREG, "", "good.mp4"});
    hostile.push_back({"dev.mp4", "", AE_IFCHR});
    hostile.push_back({"fifo.mp4", "", AE_IFIFO});
  }
  for (const auto& bad : hostile) {
    SCOPED_TRACE(bad.name);
    auto path = dir / (std::string("h") + extension(GetParam()));
    testing::write_archive(path, GetParam(), {{"good.mp4", "ok"}, bad, {"after.mp4", "after"}});
    auto reader = open(path);
    Member m;
    ASSERT_TRUE(reader.next(m));
    reader.extract_to(work / "0", nullptr);
    if (GetParam() == Format::zip && bad.type == AE_IFLNK) {
      // A streamed zip has no file modes (they live in the central directory),
      // so a symlink arrives as a regular member holding the target's name:
      // it is written as plain data under our own name, never as a link.
      ASSERT_TRUE(reader.next(m));
      reader.extract_to(work / "link", nullptr);
      EXPECT_FALSE(std::filesystem::is_symlink(work / "link"));
      EXPECT_EQ(testing::read_file(work / "link"), "/etc/passwd");
      std::filesystem::remove(work / "link");
      ASSERT_TRUE(reader.next(m));
      reader.extract_to(work / "1", nullptr);
      continue;
    }
    try {
      reader.next(m);
      FAIL() << "not rejected";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::rejected);
      std::string msg = e.what();
      EXPECT_NE(msg.find(path.string()), std::string::npos) << msg;
      EXPECT_NE(msg.find(bad.name), std::string::npos) << msg;
    }
    EXPECT_FALSE(reader.broken());
    ASSERT_TRUE(reader.next(m));
    EXPECT_EQ(m.path, "after.mp4");
    reader.extract_to(work / "1", nullptr);
    EXPECT_FALSE(reader.next(m));
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "escape.mp4"));
  EXPECT_FALSE(std::filesystem::exists(dir.path().parent_path() / "escape.mp4"));
  EXPECT_FALSE(std::filesystem::exists("/tmp/kaio-absolute.mp4"));
  size_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(work)) files += e.is_regular_file();
  EXPECT_EQ(files, 2u);
}

TEST_P(ArchiveFormats, OversizedMemberIsRejected) {
  Sandbox dir;
  auto path = dir / (std::string("big") + extension(GetParam()));
  testing::write_archive(path, GetParam(), {{"big.mp4", std::string(300000, 'b')}, {"small.mp4", "s"}});
  ArchiveLimits limits;
  limits.max_member_size = 100000;
  auto reader = open(path, limits);
  Member m;
  try {
    if (reader.next(m)) reader.extract_to(dir / "big", nullptr);  // zip may not know the size up front
    FAIL() << "not rejected";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::rejected) << e.what();
    EXPECT_NE(std::string(e.what()).find("big.mp4"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "big"));
  EXPECT_FALSE(std::filesystem::exists(dir / "big.tmp"));
  ASSERT_TRUE(reader.next(m));
  EXPECT_EQ(m.path, "small.mp4");
}

[[maybe_unused]] void PrintTo(Format f, std::ostream* os) {
  *os << extension(f);
}

INSTANTIATE_TEST_SUITE_P(Archive, ArchiveFormats, ::testing::Values(Format::tar, Format::tar_gz, Format::zip),
                         [](const ::testing::TestParamInfo<Format>& i) {
                           return std::string(i.param == Format::tar      ? "tar"
                                              : i.param == Format::tar_gz ? "tar_gz"
                                                                          : "zip");
                         });

class ArchiveBombs : public ::testing::TestWithParam<Format> {};

// 64 MB of zeros compress ~1000:1; with the ratio capped at 20 the reader
// stops long before writing it all, and leaves no partial file.
TEST_P(ArchiveBombs, ExpansionPastTheRatioStopsEarly) {
  Sandbox dir;
  auto path = dir / (std::string("bomb") + extension(GetParam()));
  testing::write_archive(path, GetParam(), {{"bomb.mp4", "", AE_IFREG, "", "", 64u << 20}});
  ASSERT_LT(std::filesystem::file_size(path), 1u << 20);
  ArchiveLimits limits;
  limits.max_expand_ratio = 20;
  auto reader = open(path, limits);
  Member m;
  try {
    ASSERT_TRUE(reader.next(m));
    reader.extract_to(dir / "bomb", nullptr);
    FAIL() << "bomb not detected";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::rejected) << e.what();
    EXPECT_NE(std::string(e.what()).find("max_expand_ratio"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(reader.broken());
  EXPECT_LT(reader.bytes_out(), 16u << 20);
  EXPECT_FALSE(std::filesystem::exists(dir / "bomb"));
  EXPECT_FALSE(std::filesystem::exists(dir / "bomb.tmp"));
  EXPECT_THROW(reader.next(m), Error);
}

// A bomb in a member that does not match the globs is caught while skipping it.
TEST_P(ArchiveBombs, SkippedMemberBombIsCaughtToo) {
  Sandbox dir;
  auto path = dir / (std::string("bomb") + extension(GetParam()));
  testing::write_archive(path, GetParam(), {{"bomb.bin", "", AE_IFREG, "", "", 64u << 20}, {"x.mp4", "x"}});
  ArchiveLimits limits;
  limits.max_expand_ratio = 20;
  auto reader = open(path, limits);
  Member m;
  try {
    reader.next(m);
    FAIL() << "bomb not detected";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::rejected) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Archive, ArchiveBombs, ::testing::Values(Format::tar_gz, Format::zip),
                         [](const ::testing::TestParamInfo<Format>& i) {
                           return std::string(i.param == Format::tar_gz ? "tar_gz" : "zip");
                         });

// A member larger than its claim (zip sizes can be unknown up front) grows it.
TEST(ArchiveClaims, ExtractGrowsAnUndersizedClaim) {
  Sandbox dir;
  auto path = dir / "a.tar";
  testing::write_archive(path, Format::tar, {{"a.mp4", testing::noise(300000)}});
  testing::CountingReserver reserver(1ull << 30);
  auto claim = reserver.reserve(1000, "test");
  auto reader = open(path);
  Member m;
  ASSERT_TRUE(reader.next(m));
  reader.extract_to(dir / "a", claim.get());
  EXPECT_GE(claim->bytes(), 300000u);
  EXPECT_EQ(reserver.held(), claim->bytes());
}

// A download in progress hands out a few bytes at a time.
class TrickleSource : public kaio::ByteSource {
 public:
  explicit TrickleSource(std::string data) : data_(std::move(data)) {}
  size_t read(std::span<std::byte> out) override {
    size_t n = std::min({out.size(), data_.size() - pos_, size_t{7}});
    std::memcpy(out.data(), data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  std::string describe() const override { return "trickle"; }

 private:
  std::string data_;
  size_t pos_ = 0;
};

TEST_P(ArchiveFormats, ShortReadsFromTheSourceAreFine) {
  Sandbox dir;
  auto path = dir / (std::string("t") + extension(GetParam()));
  std::string big = testing::noise(100000);
  testing::write_archive(path, GetParam(), {{"a.mp4", big}, {"b.mp4", "second"}});
  ArchiveReader reader(std::make_unique<TrickleSource>(testing::read_file(path)), ArchiveLimits{});
  Member m;
  ASSERT_TRUE(reader.next(m));
  reader.extract_to(dir / "a", nullptr);
  EXPECT_EQ(testing::read_file(dir / "a"), big);
  ASSERT_TRUE(reader.next(m));
  reader.extract_to(dir / "b", nullptr);
  EXPECT_EQ(testing::read_file(dir / "b"), "second");
  EXPECT_FALSE(reader.next(m));
}

TEST(ArchivePlainMedia, MediaFileIsOneMemberNamedAfterTheFile) {
  Sandbox dir;
  auto clip = dir / "clip.mp4";
  testing::make_clip(clip, "64x64", 10, 1, "-c:v mpeg4");
  auto reader = open(clip);
  Member m;
  ASSERT_TRUE(reader.next(m));
  EXPECT_EQ(m.path, "clip.mp4");
  reader.extract_to(dir / "copy", nullptr);
  EXPECT_EQ(testing::read_file(dir / "copy"), testing::read_file(clip));
  EXPECT_FALSE(reader.next(m));
}

TEST(ArchiveErrors, TruncatedStreamFailsAfterEarlierMembers) {
  Sandbox dir;
  auto path = dir / "t.tar.gz";
  std::string noise = testing::noise(400000);
  testing::write_archive(path, Format::tar_gz, {{"a.mp4", "first"}, {"b.mp4", noise}, {"c.mp4", noise}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) / 2);
  auto reader = open(path);
  Member m;
  ASSERT_TRUE(reader.next(m));
  reader.extract_to(dir / "a", nullptr);
  try {
    while (reader.next(m)) reader.extract_to(dir / "x", nullptr);
    FAIL() << "truncation not noticed";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
  EXPECT_TRUE(reader.broken());
}

TEST(ArchiveErrors, EmptyAndGarbageInputsAreCorrupt) {
  Sandbox dir;
  std::ofstream(dir / "empty.tar").close();
  std::ofstream(dir / "garbage.tar") << std::string(10000, 'g');
  for (const char* name : {"empty.tar", "garbage.tar"}) {
    try {
      auto reader = open(dir / name);
      Member m;
      reader.next(m);
      FAIL() << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(ArchiveMemberId, StableHexAndDistinct) {
  auto a = member_id("repo/x.tar.gz", "a/b.mp4");
  EXPECT_EQ(a, member_id("repo/x.tar.gz", "a/b.mp4"));
  EXPECT_NE(a, member_id("repo/y.tar.gz", "a/b.mp4"));
  EXPECT_NE(a, member_id("repo/x.tar.gz", "a/c.mp4"));
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(member_id("../../etc", "passwd").find('/'), std::string::npos);
}

}  // namespace
}  // namespace kaio::decode
