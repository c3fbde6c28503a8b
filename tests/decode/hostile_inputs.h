#pragma once
// Clips whose containers lie about how much they hold, made for real with the
// ffmpeg command line: a raw H.264 stream named .mp4 (no duration at all), an
// mp4 whose headers declare 1 s over minutes of frames, and an mp4 with a
// timestamp gap of days that declares 2 s.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "test_util.h"

namespace kaio::decode::testing {

inline void ffmpeg(const std::string& args) {
  std::string log;
  std::string cmd = "ffmpeg -hide_banner -loglevel error -nostdin -y " + args + " 2>&1";
  ASSERT_EQ(run_command(cmd, &log), 0) << cmd << "\n" << log;
}

// A still grey picture: each repeated frame is a few bytes of H.264, so a
// small file holds many frames, as a hostile one would.
inline std::string still_source(int seconds, int fps = 30) {
  return "-f lavfi -i color=c=gray:size=64x64:rate=" + std::to_string(fps) + ":duration=" + std::to_string(seconds) +
         " -c:v libx264 -preset ultrafast -pix_fmt yuv420p";
}

// An Annex B elementary stream: no container, no timestamps, no duration.
inline void make_raw_h264(const std::filesystem::path& out, int seconds) {
  ffmpeg(still_source(seconds) + " -f h264 '" + out.string() + "'");
}

namespace detail {
inline uint32_t be32(const std::string& d, size_t at) {
  return (uint32_t(uint8_t(d[at])) << 24) | (uint32_t(uint8_t(d[at + 1])) << 16) | (uint32_t(uint8_t(d[at + 2])) << 8) |
         uint32_t(uint8_t(d[at + 3]));
}
inline void put_be(std::string& d, size_t at, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i, v >>= 8) d[at + static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
}
// Sets the duration field of the first `box` (mvhd, mdhd: in their own
// timescale; tkhd: in the movie's) to `seconds`. Returns the timescale used.
inline uint32_t set_duration(std::string& d, const char* box, double seconds, uint32_t movie_timescale) {
  size_t at = d.find(box);
  if (at == std::string::npos) throw std::runtime_error(std::string("no ") + box);
  bool v1 = d[at + 4] == 1;
  bool is_tkhd = std::string(box) == "tkhd";
  uint32_t timescale = movie_timescale;
  size_t duration_at;
  if (is_tkhd) {
    duration_at = at + (v1 ? 32 : 24);
  } else {
    timescale = be32(d, at + (v1 ? 24 : 16));
    duration_at = at + (v1 ? 28 : 20);
  }
  put_be(d, duration_at, static_cast<uint64_t>(seconds * timescale), v1 ? 8 : 4);
  return timescale;
}
}  // namespace detail

// Rewrites an mp4's header durations (movie, track, media) to `seconds`,
// leaving every sample in place: the container lies about its length.
inline void declare_duration(const std::filesystem::path& mp4, double seconds) {
  std::string d = read_file(mp4);
  uint32_t movie = detail::set_duration(d, "mvhd", seconds, 0);
  detail::set_duration(d, "tkhd", seconds, movie);
  detail::set_duration(d, "mdhd", seconds, 0);
  std::ofstream(mp4, std::ios::binary | std::ios::trunc) << d;
}

// `seconds` of frames in an mp4 whose headers say `declared` seconds.
inline void make_lying_mp4(const std::filesystem::path& out, int seconds, double declared) {
  // No edit list (it would make the demuxer cut at the declared length) and
  // the index in front, so the boxes patched are the header's.
  ffmpeg(still_source(seconds) + " -use_editlist 0 -movflags +faststart '" + out.string() + "'");
  declare_duration(out, declared);
}

// 20 frames at 10 fps, the last 10 shifted by `gap_seconds`; the headers say 2 s.
inline void make_gap_mp4(const std::filesystem::path& out, int gap_seconds) {
  ffmpeg("-f lavfi -i testsrc2=size=64x64:rate=10:duration=2 -vf \"setpts='PTS+gte(N,10)*" +
         std::to_string(gap_seconds) +
         "/TB'\" -fps_mode passthrough -c:v libx264 -preset ultrafast -pix_fmt yuv420p -video_track_timescale 10 "
         "-use_editlist 0 -movflags +faststart '" +
         out.string() + "'");
  declare_duration(out, 2);
}

}  // namespace kaio::decode::testing
