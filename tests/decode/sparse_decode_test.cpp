// Decoding with the shortcuts (frames no used sample shows are skipped,
// packets before a keyframe no sample needs them for are dropped) gives the
// same windows as decoding every frame (DecodeOptions::decode_every_frame):
// the same count, the same timestamps and PSNR >= 40 dB per window, for each
// test codec and for dense, gapped and sparse sampling.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>
#include <string>

#include "decode/shard.h"
#include "decode/video.h"
#include "test_util.h"
#include "tests/support/sandbox.h"

namespace kaio::decode {
namespace {

using kaio::test::Sandbox;
using testing::has_encoder;
using testing::make_clip;

struct SparseCase {
  const char* name;
  const char* encoder;  // must be listed by `ffmpeg -encoders`
  const char* size;
  double fps;
  double seconds;
  const char* codec_args;
  bool rotate90 = false;  // remux with a display matrix
};

void PrintTo(const SparseCase& c, std::ostream* os) {
  *os << c.name;
}

struct Sampling {
  const char* name;
  int frames, stride;
  double fps;
};

// Dense windows, windows with gaps between them (stride > frames), and a rate
// far below the clip's keyframe interval.
constexpr Sampling kSamplings[] = {{"4fps_T4_S4", 4, 4, 4}, {"3fps_T2_S6", 2, 6, 3}, {"1fps_T2_S2", 2, 2, 1}};

class SparseDecode : public ::testing::TestWithParam<SparseCase> {};

TEST_P(SparseDecode, SameWindowsAsFullDecode) {
  const auto& c = GetParam();
  if (!has_encoder(c.encoder)) GTEST_SKIP() << "skipped: ffmpeg has no " << c.encoder << " encoder";
  Sandbox dir;
  auto clip = dir / (std::string(c.name) + ".mp4");
  make_clip(clip, c.size, c.fps, c.seconds, c.codec_args);
  if (c.rotate90) {
    auto rotated = dir / "remuxed.mp4";
    std::string log;
    ASSERT_EQ(testing::run_command("ffmpeg -hide_banner -loglevel error -nostdin -y -i '" + clip.string() +
                                       "' -c copy -metadata:s:v:0 rotate=90 '" + rotated.string() + "' 2>&1",
                                   &log),
              0)
        << log;
    std::filesystem::rename(rotated, clip);
  }
  for (const auto& s : kSamplings) {
    WindowSpec spec;
    spec.frames = s.frames;
    spec.stride = s.stride;
    spec.fps = s.fps;
    spec.size = 64;
    const ClipOrigin origin{"repo/file.tar", c.name, ""};
    DecodeOptions full_opts;
    full_opts.decode_every_frame = true;
    auto full = decode_clip(clip, origin, spec, dir / "full.shard", full_opts);
    auto fast = decode_clip(clip, origin, spec, dir / "fast.shard", DecodeOptions{});
    EXPECT_EQ(fast.windows, full.windows) << c.name << " " << s.name;
    EXPECT_EQ(fast.sampled_frames, full.sampled_frames) << c.name << " " << s.name;
    EXPECT_LE(fast.decoded_frames, full.decoded_frames) << c.name << " " << s.name;
    ASSERT_GT(full.windows, 0) << c.name << " " << s.name;
    ShardReader a(dir / "full.shard"), b(dir / "fast.shard");
    ASSERT_EQ(a.windows(), b.windows());
    const size_t window_bytes = a.frame_bytes() * static_cast<size_t>(a.frames());
    double min_db = 99;
    for (int w = 0; w < a.windows(); ++w) {
      EXPECT_EQ(b.info(w).first_time, a.info(w).first_time) << c.name << " " << s.name << " window " << w;
      double db = testing::psnr(b.window(w), a.window(w), window_bytes);
      min_db = std::min(min_db, db);
      EXPECT_GE(db, 40.0) << c.name << " " << s.name << " window " << w;
    }
    // What the shortcuts saved, for the record (99 dB: identical).
    std::cout << c.name << " " << s.name << ": " << a.windows() << " windows, min PSNR " << min_db
              << " dB, frames decoded " << fast.decoded_frames << " of " << full.decoded_frames << ", packets dropped "
              << fast.packets_dropped << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Sparse, SparseDecode,
    ::testing::Values(
        SparseCase{"h264_bframes", "libx264", "320x180", 30, 4,
                   "-c:v libx264 -preset veryfast -bf 3 -g 15 -pix_fmt yuv420p"},
        SparseCase{"h264_bframes_open_gop", "libx264", "320x180", 30, 4,
                   "-c:v libx264 -preset veryfast -bf 3 -g 15 -x264-params open-gop=1 -pix_fmt yuv420p"},
        SparseCase{"hevc", "libx265", "320x180", 30, 4,
                   "-c:v libx265 -preset ultrafast -x265-params log-level=error:keyint=15:bframes=3 -pix_fmt yuv420p "
                   "-tag:v hvc1"},
        SparseCase{"vp9", "libvpx-vp9", "320x180", 30, 4,
                   "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 500k -g 15"},
        SparseCase{"av1", "libaom-av1", "320x180", 24, 3, "-c:v libaom-av1 -cpu-used 8 -row-mt 1 -b:v 300k -g 12"},
        SparseCase{"mpeg4", "mpeg4", "320x180", 30, 4, "-c:v mpeg4 -q:v 3 -bf 2 -g 15"},
        SparseCase{"variable_frame_rate", "libx264", "320x240", 30, 4,
                   "-vf \"select='lt(mod(n\\,30)\\,8)+gte(n\\,60)'\" -fps_mode vfr -c:v libx264 -preset veryfast "
                   "-bf 3 -g 15 -pix_fmt yuv420p"},
        SparseCase{"rotated", "libx264", "320x180", 30, 4, "-c:v libx264 -preset veryfast -bf 3 -g 15 -pix_fmt yuv420p",
                   true}),
    [](const ::testing::TestParamInfo<SparseCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kaio::decode
