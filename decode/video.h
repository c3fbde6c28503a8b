#pragma once
// Decoding one clip into training windows: frames sampled at spec.fps by
// presentation time, rotated upright, resized to size x size RGB, grouped into
// windows of T frames every S frames, written as a shard (see shard.h).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <stop_token>
#include <string>

#include "common/config.h"

namespace kaio::decode {

enum class ResizeMode { crop, pad, stretch };

struct WindowSpec {
  int frames = 16;   // T
  int stride = 16;   // S
  double fps = 4.0;  // sampling rate
  int size = 224;    // output side
  ResizeMode resize = ResizeMode::crop;
  bool pad_short = false;  // pad a clip shorter than T sampled frames by repeating its last frame
};

// Throws Error(config) naming decode.resize when the mode is unknown.
WindowSpec from_config(const kaio::DecodeConfig& config);

// Windows a clip with `sampled` frames gives under `spec`.
int window_count(const WindowSpec& spec, int64_t sampled);

struct ClipProbe {
  double duration = 0;        // seconds
  double fps = 0;             // the stream's average frame rate
  int width = 0, height = 0;  // coded size
  int rotation = 0;           // degrees clockwise applied to make it upright
  std::string codec;
  int64_t sampled_frames = 0; // frames it will sample at spec.fps
  int expected_windows = 0;
  uint64_t shard_bytes = 0;   // for expected_windows + 1 windows, no metadata
};

// Reads the container headers only. Throws Error(corrupt) naming the file.
ClipProbe probe_clip(const std::filesystem::path& clip, const WindowSpec& spec);

struct ClipOrigin {
  std::string source_file;  // the archive in the repo
  std::string member;       // the member inside it
  std::string caption;
};

struct DecodeOptions {
  int codec_threads = 1;  // 0 = FFmpeg decides
  std::chrono::milliseconds timeout{600'000};
  std::stop_token stop;
};

struct ShardSummary {
  int windows = 0;          // 0: nothing written (see skipped_reason)
  int64_t sampled_frames = 0;
  uint64_t bytes = 0;       // shard file size
  std::string skipped_reason;  // why no shard was written
};

// Decodes the clip once, linearly, and writes shard_out (via shard_out.tmp).
// Errors: corrupt (names file, member and FFmpeg's message; also a decode
// past opts.timeout), rejected (huge claimed resolution), cancelled (stop requested).
ShardSummary decode_clip(const std::filesystem::path& clip, const ClipOrigin& origin, const WindowSpec& spec,
                         const std::filesystem::path& shard_out, const DecodeOptions& opts);

}  // namespace kaio::decode
