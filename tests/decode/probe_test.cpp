// `kaioctl probe` as a real process.
#include <gtest/gtest.h>

#include "synth.h"
#include "test_util.h"
#include "tests/support/sandbox.h"

namespace kaio::decode {
namespace {

const std::string kProbe = std::string(KAIO_BUILD_DIR) + "/daemon/kaioctl probe";

struct PngSize {
  uint32_t width = 0, height = 0;
};

// Width and height from a PNG's IHDR chunk (bytes 16-23, big-endian), which
// the signature and the chunk header precede.
PngSize png_size(const std::filesystem::path& png) {
  auto bytes = testing::read_file(png);
  EXPECT_GE(bytes.size(), 24u) << png;
  if (bytes.size() < 24 || bytes.substr(1, 3) != "PNG" || bytes.substr(12, 4) != "IHDR") {
    ADD_FAILURE() << png << " is not a PNG";
    return {};
  }
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = v << 8 | static_cast<uint8_t>(bytes[at + i]);
    return v;
  };
  return {be32(16), be32(20)};
}

// The contact sheet's layout for 48 px frames (docs/control-protocol.md): a
// row per window, its frames (wider than their labels, "1.75s" 29 px, so
// each cell is a frame wide) left to right in cells 2 px apart with an 11 px
// label strip under each (the 5x7 font, 2 px above and below), behind a
// margin of "w<index>" (11 px for one digit) and 2 px each side.
constexpr uint32_t kFrame = 48, kGap = 2, kLabel = 7 + 2 * kGap, kMargin = 11 + 2 * kGap;
uint32_t sheet_width(uint32_t frames) {
  return kMargin + frames * (kFrame + kGap);
}
uint32_t sheet_height(uint32_t rows) {
  return kGap + rows * (kFrame + kLabel + kGap);
}

// A contact sheet of every window, a row each, or of the one --window names,
// each frame labelled; a window the clip lacks is named with the count.
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
                                    "' --frames 4 --stride 4 --fps 4 --size 48 2>&1",
                                &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("academic_source/"), std::string::npos) << out;
  EXPECT_NE(out.find("2 windows"), std::string::npos) << out;
  EXPECT_NE(out.find("windows 0-1 of 2, 4 frames each"), std::string::npos) << out;
  auto all = png_size(png);
  EXPECT_EQ(all.width, sheet_width(4)) << "4 frames a row";
  EXPECT_EQ(all.height, sheet_height(2)) << "a row per window";
  std::string dims;  // ffmpeg reads it too
  testing::run_command("ffprobe -v error -show_entries stream=width,height -of csv=p=0 '" + png.string() + "'", &dims);
  EXPECT_EQ(dims.substr(0, dims.find('\n')), std::to_string(all.width) + "," + std::to_string(all.height)) << dims;

  const std::string window_spec = " --frames 4 --stride 4 --fps 4 --size 48 2>&1";
  auto one = dir / "one.png";
  rc = testing::run_command(
      kProbe + " '" + archive.string() + "' --preview '" + one.string() + "' --window 1" + window_spec, &out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("window 1 of 2"), std::string::npos) << out;
  auto single = png_size(one);
  EXPECT_EQ(single.width, sheet_width(4));
  EXPECT_EQ(single.height, sheet_height(1)) << "one row";

  auto past = dir / "past.png";
  rc = testing::run_command(
      kProbe + " '" + archive.string() + "' --preview '" + past.string() + "' --window 2" + window_spec, &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("academic_source/"), std::string::npos) << out;
  EXPECT_NE(out.find(": error: --window 2 is out of range: the clip has 2 windows (0-1)"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(past));
  EXPECT_EQ(testing::run_command(kProbe + " '" + archive.string() + "' --window 0 2>&1", &out), 2) << out;
  EXPECT_NE(out.find("--window needs --preview"), std::string::npos) << out;
}

TEST(DecodeProbe, ReportsBadMembersAndUsage) {
  kaio::test::Sandbox dir;
  std::ofstream(dir / "bad.mp4") << "not a video";
  std::string out;
  EXPECT_EQ(testing::run_command(kProbe + " '" + (dir / "bad.mp4").string() + "' 2>&1", &out), 1) << out;
  EXPECT_NE(out.find("bad.mp4: error"), std::string::npos) << out;
  EXPECT_EQ(testing::run_command(kProbe + " --frames 2>&1", &out), 2) << out;
  // --help names every option.
  EXPECT_EQ(testing::run_command(kProbe + " --help 2>&1", &out), 0) << out;
  for (const char* option : {"--preview", "--window", "--frames", "--stride", "--fps", "--size"})
    EXPECT_NE(out.find(std::string("  ") + option + " "), std::string::npos) << option << "\n" << out;
}

}  // namespace
}  // namespace kaio::decode
