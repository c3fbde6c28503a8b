// `kaioctl probe` as a real process.
#include <gtest/gtest.h>

#include "synth.h"
#include "test_util.h"
#include "tests/support/sandbox.h"

namespace kaio::decode {
namespace {

const std::string kProbe = std::string(KAIO_BUILD_DIR) + "/daemon/kaioctl probe";

TEST(DecodeProbe, ListsMembersAndWritesAPreview) {
  kaio::test::Sandbox dir;
  mkdata::DatasetSpec spec;
  spec.out = dir / "data";
  spec.clips = 2;
  spec.clips_per_archive = 2;
  spec.clip = {96, 64, 10, 2, 0, ""};
  auto summary = mkdata::write_dataset(spec);
  auto archive = dir / "data" / summary.archives.at(0);
  auto png = dir / "sheet.png";
  std::string out;
  int rc = testing::run_command(kProbe + " '" + archive.string() + "' --preview '" + png.string() +
                                    "' --frames 4 --stride 4 --fps 4 --size 32 2>&1",
                                &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("academic_source/"), std::string::npos) << out;
  EXPECT_NE(out.find("2 windows"), std::string::npos) << out;
  auto bytes = testing::read_file(png);
  ASSERT_GT(bytes.size(), 8u);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  std::string dims;
  testing::run_command("ffprobe -v error -show_entries stream=width,height -of csv=p=0 '" + png.string() + "'", &dims);
  EXPECT_EQ(dims.substr(0, 5), "64,64") << dims;  // 4 frames of 32x32 in a 2x2 grid
}

TEST(DecodeProbe, ReportsBadMembersAndUsage) {
  kaio::test::Sandbox dir;
  std::ofstream(dir / "bad.mp4") << "not a video";
  std::string out;
  EXPECT_EQ(testing::run_command(kProbe + " '" + (dir / "bad.mp4").string() + "' 2>&1", &out), 1) << out;
  EXPECT_NE(out.find("bad.mp4: error"), std::string::npos) << out;
  EXPECT_EQ(testing::run_command(kProbe + " --frames 2>&1", &out), 2) << out;
}

}  // namespace
}  // namespace kaio::decode
