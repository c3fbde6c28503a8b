// Decoding real encoded clips: window counts from duration and fps, pixels
// against the ffmpeg command line, rotation, VFR, audio, short clips, errors.
#include "decode/video.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "decode/shard.h"
#include "test_util.h"
#include "tests/support/sandbox.h"

namespace kaio::decode {
namespace {

using kaio::test::Sandbox;
using testing::has_encoder;
using testing::make_clip;

WindowSpec small_spec() {
  WindowSpec s;
  s.frames = 4;
  s.stride = 4;
  s.fps = 4;
  s.size = 64;
  return s;
}

int expected_windows(double seconds, const WindowSpec& s) {
  auto sampled = static_cast<int64_t>(std::ceil(seconds * s.fps - 1e-6));
  return window_count(s, sampled);
}

// The ffmpeg command line's rendering of the frame shown at `t`, with the
// same geometry (center square crop, then scale to size x size), rgb24.
// (Scaling first and cropping after lands edges a fraction of a pixel
// elsewhere, which a sharp test pattern punishes with ~20 dB.) For a rotated
// clip ffmpeg turns it after scaling, like kaio, because turning 4:2:0 first
// moves the chroma siting by half a pixel on the saturated test bars.
std::string ffmpeg_frame_at(const std::filesystem::path& clip, double t, int size, bool rotated_ccw = false) {
  char filter[512];
  std::snprintf(filter, sizeof filter, "select='gte(t\\,%.6f)',crop='min(iw\\,ih)':'min(iw\\,ih)',scale=%d:%d",
                t - 0.001, size, size);
  std::string out;
  std::string cmd = "ffmpeg -hide_banner -loglevel error -nostdin " + std::string(rotated_ccw ? "-noautorotate " : "") +
                    "-i '" + clip.string() + "' -vf \"" + filter + (rotated_ccw ? ",transpose=cclock" : "") +
                    "\" -frames:v 1 -f rawvideo -pix_fmt rgb24 -";
  EXPECT_EQ(testing::run_command(cmd, &out), 0) << cmd;
  return out;
}

struct DecodeCase {
  const char* name;
  const char* encoder;  // must be listed by `ffmpeg -encoders`
  const char* size;
  double fps;
  double seconds;
  const char* codec_args;
  const char* extra;
  bool rotate90 = false;  // remux with a display matrix (ffmpeg 5.1 sets it only when stream-copying)
};

void PrintTo(const DecodeCase& c, std::ostream* os) {
  *os << c.name;
}

void add_rotation(const std::filesystem::path& clip) {
  auto rotated = clip;
  rotated += ".rot.mp4";
  std::string log;
  ASSERT_EQ(testing::run_command("ffmpeg -hide_banner -loglevel error -nostdin -y -i '" + clip.string() +
                                     "' -c copy -metadata:s:v:0 rotate=90 '" + rotated.string() + "' 2>&1",
                                 &log),
            0)
      << log;
  std::filesystem::rename(rotated, clip);
}

class DecodeCodecs : public ::testing::TestWithParam<DecodeCase> {};

// Each clip gives the window count its duration and fps imply (+-1), and the
// first frame of each window matches ffmpeg's own decode at >= 30 dB.
TEST_P(DecodeCodecs, WindowsAndPixelsMatchFfmpeg) {
  const auto& c = GetParam();
  if (!has_encoder(c.encoder)) GTEST_SKIP() << "skipped: ffmpeg has no " << c.encoder << " encoder";
  Sandbox dir;
  auto clip = dir / (std::string(c.name) + ".mp4");
  make_clip(clip, c.size, c.fps, c.seconds, c.codec_args, c.extra);
  if (c.rotate90) add_rotation(clip);
  auto spec = small_spec();
  auto probe = probe_clip(clip, spec);
  EXPECT_NEAR(probe.duration, c.seconds, 0.2);
  auto shard = dir / "clip.shard";
  auto summary = decode_clip(clip, ClipOrigin{"repo/file.tar", c.name, "cap"}, spec, shard, DecodeOptions{});
  int expected = expected_windows(c.seconds, spec);
  EXPECT_NEAR(summary.windows, expected, 1) << c.name;
  EXPECT_NEAR(probe.expected_windows, expected, 1) << c.name;
  ShardReader reader(shard);
  ASSERT_EQ(reader.windows(), summary.windows);
  EXPECT_EQ(summary.bytes, std::filesystem::file_size(shard));
  for (int w = 0; w < reader.windows(); ++w) {
    auto ref = ffmpeg_frame_at(clip, reader.info(w).first_time, spec.size, c.rotate90);
    ASSERT_EQ(ref.size(), reader.frame_bytes()) << c.name << " window " << w;
    double db = testing::psnr(reader.window(w), reinterpret_cast<const uint8_t*>(ref.data()), ref.size());
    EXPECT_GE(db, 30.0) << c.name << " window " << w << " at t=" << reader.info(w).first_time;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Decode, DecodeCodecs,
    ::testing::Values(
        DecodeCase{"h264_640x360", "libx264", "640x360", 30, 4, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p", ""},
        DecodeCase{"h264_1080p", "libx264", "1920x1080", 24, 2, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p", ""},
        DecodeCase{"h264_321x241_yuv444", "libx264", "321x241", 25, 3,
                   "-c:v libx264 -preset ultrafast -pix_fmt yuv444p", ""},
        DecodeCase{"hevc", "libx265", "320x180", 30, 3,
                   "-c:v libx265 -preset ultrafast -x265-params log-level=error -pix_fmt yuv420p -tag:v hvc1", ""},
        DecodeCase{"vp9", "libvpx-vp9", "320x180", 30, 3, "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 500k",
                   ""},
        DecodeCase{"av1", "libaom-av1", "320x180", 24, 2, "-c:v libaom-av1 -cpu-used 8 -row-mt 1 -b:v 300k", ""},
        DecodeCase{"mpeg4", "mpeg4", "640x360", 30, 3, "-c:v mpeg4 -q:v 3", ""},
        DecodeCase{"with_audio", "libx264", "320x240", 30, 3,
                   "-f lavfi -i sine=frequency=440:duration=3 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac "
                   "-shortest",
                   ""},
        DecodeCase{"portrait_rotated", "libx264", "640x360", 30, 3, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p",
                   "", true},
        DecodeCase{"variable_frame_rate", "libx264", "320x240", 30, 4,
                   "-vf \"select='lt(mod(n\\,30)\\,8)+gte(n\\,60)'\" -fps_mode vfr -c:v libx264 -preset ultrafast "
                   "-pix_fmt yuv420p",
                   ""}),
    [](const ::testing::TestParamInfo<DecodeCase>& info) { return std::string(info.param.name); });

TEST(DecodeVideo, RotationMetadataIsApplied) {
  Sandbox dir;
  auto clip = dir / "rot.mp4";
  make_clip(clip, "640x360", 30, 1, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  add_rotation(clip);
  auto probe = probe_clip(clip, small_spec());
  EXPECT_EQ(probe.rotation, 270);  // the matrix says 90 counterclockwise
}

TEST(DecodeVideo, ShortClipIsSkippedWithReason) {
  Sandbox dir;
  auto clip = dir / "short.mp4";
  make_clip(clip, "160x120", 30, 0.5, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  auto spec = small_spec();
  spec.frames = 16;
  auto summary = decode_clip(clip, ClipOrigin{"repo/a.tar", "short.mp4", ""}, spec, dir / "s.shard", DecodeOptions{});
  EXPECT_EQ(summary.windows, 0);
  EXPECT_NE(summary.skipped_reason.find("fewer than a window"), std::string::npos) << summary.skipped_reason;
  EXPECT_FALSE(std::filesystem::exists(dir / "s.shard"));
  EXPECT_FALSE(std::filesystem::exists(dir / "s.shard.tmp"));
}

TEST(DecodeVideo, ShortClipIsPaddedWhenAsked) {
  Sandbox dir;
  auto clip = dir / "short.mp4";
  make_clip(clip, "160x120", 30, 0.5, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  auto spec = small_spec();
  spec.frames = 16;
  spec.pad_short = true;
  auto summary = decode_clip(clip, ClipOrigin{"repo/a.tar", "short.mp4", ""}, spec, dir / "s.shard", DecodeOptions{});
  ASSERT_EQ(summary.windows, 1);
  ShardReader reader(dir / "s.shard");
  // The padded tail repeats the last real frame.
  const uint8_t* w = reader.window(0);
  size_t fb = reader.frame_bytes();
  EXPECT_EQ(0, std::memcmp(w + fb * 14, w + fb * 15, fb));
}

TEST(DecodeVideo, StrideSmallerThanWindowOverlaps) {
  Sandbox dir;
  auto clip = dir / "c.mp4";
  make_clip(clip, "160x120", 30, 4, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  auto spec = small_spec();
  spec.frames = 8;
  spec.stride = 2;  // 16 samples -> (16-8)/2+1 = 5 windows
  auto summary = decode_clip(clip, ClipOrigin{"r", "c.mp4", ""}, spec, dir / "c.shard", DecodeOptions{});
  EXPECT_NEAR(summary.windows, 5, 1);
  ShardReader reader(dir / "c.shard");
  size_t fb = reader.frame_bytes();
  // Window 1 starts where window 0's third frame is.
  EXPECT_EQ(0, std::memcmp(reader.window(1), reader.window(0) + 2 * fb, fb));
  EXPECT_NEAR(reader.info(1).first_time - reader.info(0).first_time, 0.5, 0.05);
}

TEST(DecodeVideo, PadAndStretchModesKeepTheOutputSize) {
  Sandbox dir;
  auto clip = dir / "c.mp4";
  make_clip(clip, "320x180", 30, 1, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  for (auto mode : {ResizeMode::pad, ResizeMode::stretch}) {
    auto spec = small_spec();
    spec.resize = mode;
    auto summary = decode_clip(clip, ClipOrigin{"r", "c.mp4", ""}, spec, dir / "c.shard", DecodeOptions{});
    ASSERT_EQ(summary.windows, 1);
    ShardReader reader(dir / "c.shard");
    const uint8_t* f = reader.window(0);
    // Pad letterboxes 16:9 into a square: the top row is black; stretch fills it.
    bool top_black = std::all_of(f, f + 64 * 3, [](uint8_t v) { return v == 0; });
    EXPECT_EQ(top_black, mode == ResizeMode::pad);
  }
}

// Sampling 30 fps down to 4 lets the decoder drop unshown non-reference
// frames; every kept frame must still be byte-identical to a full decode's.
TEST(DecodeVideo, SparseSamplingMatchesFullDecodeExactly) {
  Sandbox dir;
  auto clip = dir / "b.mp4";
  make_clip(clip, "160x120", 30, 4, "-c:v libx264 -preset veryfast -bf 3 -b_strategy 0 -pix_fmt yuv420p");
  auto full = small_spec();
  full.fps = 30;
  full.frames = 1;
  full.stride = 1;
  auto sparse = small_spec();
  sparse.frames = 1;
  sparse.stride = 1;
  decode_clip(clip, ClipOrigin{"r", "b.mp4", ""}, full, dir / "full.shard", DecodeOptions{});
  decode_clip(clip, ClipOrigin{"r", "b.mp4", ""}, sparse, dir / "sparse.shard", DecodeOptions{});
  ShardReader all(dir / "full.shard"), some(dir / "sparse.shard");
  ASSERT_EQ(all.windows(), 120);
  ASSERT_EQ(some.windows(), 16);
  for (int k = 0; k < some.windows(); ++k) {
    int index = static_cast<int>(std::floor(k * 30.0 / 4 + 1e-9));  // the last frame at or before k/4 s
    EXPECT_EQ(some.info(k).first_time, all.info(index).first_time) << k;
    EXPECT_EQ(0, std::memcmp(some.window(k), all.window(index), some.frame_bytes())) << "sample " << k;
  }
}

TEST(DecodeErrors, HugeClaimedResolutionIsRejected) {
  Sandbox dir;
  auto clip = dir / "huge.mov";
  std::string log;
  ASSERT_EQ(
      testing::run_command("ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i color=size=17000x2:d=1:r=1 "
                           "-c:v png '" +
                               clip.string() + "' 2>&1",
                           &log),
      0)
      << log;
  try {
    decode_clip(clip, ClipOrigin{"r", "huge.mov", ""}, small_spec(), dir / "h.shard", DecodeOptions{});
    FAIL() << "not rejected";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::rejected) << e.what();
    EXPECT_NE(std::string(e.what()).find("17000x2"), std::string::npos) << e.what();
  }
}

TEST(DecodeErrors, TimeoutIsAnErrorNamingTheSetting) {
  Sandbox dir;
  auto clip = dir / "c.mp4";
  make_clip(clip, "160x120", 30, 1, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  DecodeOptions opts;
  opts.timeout = std::chrono::milliseconds(0);
  try {
    decode_clip(clip, ClipOrigin{"r", "c.mp4", ""}, small_spec(), dir / "c.shard", opts);
    FAIL() << "no timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find("decode.timeout"), std::string::npos) << e.what();
  }
}

TEST(DecodeErrors, TruncatedClipNamesFileAndMember) {
  Sandbox dir;
  auto clip = dir / "trunc.mp4";
  make_clip(clip, "320x240", 30, 2, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  std::filesystem::resize_file(clip, std::filesystem::file_size(clip) / 2);
  try {
    decode_clip(clip, ClipOrigin{"repo/a.tar.gz", "videos/trunc.mp4", ""}, small_spec(), dir / "t.shard",
                DecodeOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
    std::string m = e.what();
    EXPECT_NE(m.find(clip.string()), std::string::npos) << m;
    EXPECT_NE(m.find("videos/trunc.mp4"), std::string::npos) << m;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "t.shard.tmp"));
}

// With the index at the front, a cut file reads to a quiet EOF halfway.
TEST(DecodeErrors, TruncatedFaststartClipIsCorrupt) {
  Sandbox dir;
  auto clip = dir / "fs.mp4";
  make_clip(clip, "320x240", 30, 4, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p -movflags +faststart");
  std::filesystem::resize_file(clip, std::filesystem::file_size(clip) / 2);
  try {
    decode_clip(clip, ClipOrigin{"repo/a.tar", "fs.mp4", ""}, small_spec(), dir / "f.shard", DecodeOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
}

TEST(DecodeErrors, ZeroByteAndNonVideoFilesAreCorrupt) {
  Sandbox dir;
  std::ofstream(dir / "empty.mp4").close();
  std::ofstream(dir / "text.mp4") << "this is not a video, just some text pretending to be one\n";
  for (const char* name : {"empty.mp4", "text.mp4"}) {
    try {
      decode_clip(dir / name, ClipOrigin{"repo/a.tar", name, ""}, small_spec(), dir / "x.shard", DecodeOptions{});
      FAIL() << name << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::corrupt) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(DecodeErrors, AudioOnlyFileIsNotAVideo) {
  Sandbox dir;
  auto clip = dir / "audio.mp4";
  std::string log;
  ASSERT_EQ(
      testing::run_command("ffmpeg -hide_banner -loglevel error -nostdin -y -f lavfi -i sine=duration=1 -c:a aac '" +
                               clip.string() + "' 2>&1",
                           &log),
      0)
      << log;
  try {
    probe_clip(clip, small_spec());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::corrupt);
    EXPECT_NE(std::string(e.what()).find("not a video"), std::string::npos) << e.what();
  }
}

TEST(DecodeErrors, StopRequestCancels) {
  Sandbox dir;
  auto clip = dir / "c.mp4";
  make_clip(clip, "160x120", 30, 2, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p");
  std::stop_source stop;
  stop.request_stop();
  DecodeOptions opts;
  opts.stop = stop.get_token();
  try {
    decode_clip(clip, ClipOrigin{"r", "c.mp4", ""}, small_spec(), dir / "c.shard", opts);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::cancelled) << e.what();
  }
}

TEST(DecodeConfig, FromConfigRejectsUnknownResize) {
  kaio::DecodeConfig c;
  c.resize = "zoom";
  EXPECT_THROW(from_config(c), Error);
  c.resize = "pad";
  EXPECT_EQ(from_config(c).resize, ResizeMode::pad);
}

}  // namespace
}  // namespace kaio::decode
