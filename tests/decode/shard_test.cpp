#include "decode/shard.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "common/error.h"
#include "decode/video.h"
#include "test_util.h"
#include "tests/support/sandbox.h"

namespace kaio::decode {
namespace {

WindowSpec tiny() {
  WindowSpec s;
  s.frames = 2;
  s.size = 5;  // 2*5*5*3 = 150 bytes: exercises the 64-byte alignment
  return s;
}

TEST(ShardFormat, RoundTripsWindowsAndMetadata) {
  kaio::test::Sandbox dir;
  auto spec = tiny();
  std::vector<uint8_t> w0(150), w1(150);
  for (size_t i = 0; i < 150; ++i) {
    w0[i] = static_cast<uint8_t>(i);
    w1[i] = static_cast<uint8_t>(255 - i);
  }
  uint64_t size = 0;
  {
    ShardWriter writer(dir / "s.shard", spec);
    writer.add_window(w0, {0.0, "repo/a.tar.gz", "x/y.mp4", "a caption"});
    writer.add_window(w1, {4.25, "repo/a.tar.gz", "x/y.mp4", ""});
    EXPECT_FALSE(std::filesystem::exists(dir / "s.shard"));
    size = writer.finish();
  }
  EXPECT_EQ(size, std::filesystem::file_size(dir / "s.shard"));
  EXPECT_EQ(size, shard_bytes(spec, 2, std::string("repo/a.tar.gz").size() + std::string("x/y.mp4").size()) + 9);
  EXPECT_FALSE(std::filesystem::exists(dir / "s.shard.tmp"));
  ShardReader r(dir / "s.shard");
  ASSERT_EQ(r.windows(), 2);
  EXPECT_EQ(r.frames(), 2);
  EXPECT_EQ(r.height(), 5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(r.window(1)) % 64, 0u);
  EXPECT_EQ(0, std::memcmp(r.window(0), w0.data(), 150));
  EXPECT_EQ(0, std::memcmp(r.window(1), w1.data(), 150));
  EXPECT_EQ(r.info(0).caption, "a caption");
  EXPECT_EQ(r.info(1).first_time, 4.25);
  EXPECT_EQ(r.info(1).member, "x/y.mp4");
  EXPECT_THROW(r.window(2), Error);
}

TEST(ShardFormat, UnfinishedWriterLeavesNothing) {
  kaio::test::Sandbox dir;
  {
    ShardWriter writer(dir / "s.shard", tiny());
    writer.add_window(std::vector<uint8_t>(150), {});
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(ShardFormat, BadFilesAreCorruptNamingTheFile) {
  kaio::test::Sandbox dir;
  {
    ShardWriter writer(dir / "good.shard", tiny());
    writer.add_window(std::vector<uint8_t>(150, 1), {1.0, "s", "m", "c"});
    writer.finish();
  }
  std::string good = testing::read_file(dir / "good.shard");
  auto write = [&](const std::string& name, const std::string& data) {
    std::ofstream(dir / name, std::ios::binary) << data;
    return dir / name;
  };
  std::string bad_magic = good;
  bad_magic[0] = 'X';
  std::string bad_count = good;
  bad_count[28] = 9;  // windows
  for (const auto& [name, data] :
       std::vector<std::pair<std::string, std::string>>{{"short.shard", good.substr(0, 20)},
                                                        {"magic.shard", bad_magic},
                                                        {"count.shard", bad_count},
                                                        {"truncated.shard", good.substr(0, good.size() - 3)}}) {
    auto p = write(name, data);
    try {
      ShardReader r(p);
      FAIL() << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::corrupt) << name;
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace kaio::decode
