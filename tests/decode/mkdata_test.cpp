// kaio-mkdata as a program: layouts, determinism, target size.
#include <gtest/gtest.h>

#include "test_util.h"
#include "tests/support/sandbox.h"

namespace kaio::decode {
namespace {

const std::string kTool = std::string(KAIO_BUILD_DIR) + "/tools/kaio-mkdata/kaio-mkdata";

std::string run_tool(const std::string& args) {
  std::string out;
  int rc = testing::run_command(kTool + " " + args + " 2>&1", &out);
  EXPECT_EQ(rc, 0) << out;
  return out;
}

TEST(MkData, LlavaLayoutIsDeterministic) {
  kaio::test::Sandbox dir;
  for (const char* name : {"a", "b"}) {
    run_tool("--out " + (dir / name).string() +
             " --seed 5 --clips 3 --clips-per-archive 2 --seconds 1 --width 64 --height 48 --fps 8");
  }
  auto sub = std::filesystem::path("0_30_s_academic_v0_1");
  for (const auto& file : {sub / "0_30_s_academic_v0_1_videos_1.tar.gz", sub / "0_30_s_academic_v0_1_videos_2.tar.gz",
                           sub / "0_30_s_academic_v0_1_cap_processed.json"}) {
    ASSERT_TRUE(std::filesystem::exists(dir / "a" / file)) << file;
    EXPECT_EQ(testing::read_file(dir / "a" / file), testing::read_file(dir / "b" / file)) << file;
  }
  std::string listing;
  testing::run_command("tar tzf '" + (dir / "a" / sub / "0_30_s_academic_v0_1_videos_1.tar.gz").string() + "'",
                       &listing);
  EXPECT_NE(listing.find("academic_source/"), std::string::npos) << listing;
  EXPECT_NE(testing::read_file(dir / "a" / sub / "0_30_s_academic_v0_1_cap_processed.json").find("\"gpt\""),
            std::string::npos);
}

TEST(MkData, PhysicalAiLayoutReachesTargetBytes) {
  kaio::test::Sandbox dir;
  auto out = run_tool("--layout physicalai --out " + dir.path().string() +
                      " --target-bytes 300KB --clips-per-archive 4 --seconds 1 --width 128 --height 96 --fps 10");
  uint64_t total = 0;
  int zips = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir.path())) {
    if (e.path().extension() == ".zip") {
      ++zips;
      total += e.file_size();
      EXPECT_NE(e.path().filename().string().find("camera_front_wide_120fov.chunk_"), std::string::npos);
    }
  }
  EXPECT_GE(zips, 1);
  EXPECT_GE(total, 300000u);
  EXPECT_NE(out.find("encoder"), std::string::npos);
}

TEST(MkData, BadFlagsAreUsageErrors) {
  std::string out;
  EXPECT_EQ(testing::run_command(kTool + " --layout nope --out /tmp/x 2>&1", &out), 2) << out;
  EXPECT_EQ(testing::run_command(kTool + " 2>&1", &out), 2) << out;
}

}  // namespace
}  // namespace kaio::decode
