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
#include "decode/shard.h"

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
  int64_t sampled_frames = 0;  // frames it will sample at spec.fps
  int expected_windows = 0;
  uint64_t shard_bytes = 0;  // for expected_windows + 1 windows, no metadata
};

// Reads the container headers only. Throws Error(corrupt) naming the file.
ClipProbe probe_clip(const std::filesystem::path& clip, const WindowSpec& spec);

struct ClipOrigin {
  std::string source_file;  // the archive in the repo
  std::string member;       // the member inside it
  std::string caption;
};

// A clip samples at most one frame per this many bytes of its file (plus one
// window). Real video costs far more per frame (an H.264 frame that repeats
// the last one is still ~10 bytes of slice plus its container index, and a
// sample shows such a frame); only timestamps that jump (a gap of days in a
// 4 KB file) or a hostile stream get near it.
inline constexpr uint64_t kMinBytesPerSample = 16;
// The most samples a clip file of `file_bytes` may give under `spec`.
int64_t max_samples_for(uint64_t file_bytes, const WindowSpec& spec);

struct DecodeOptions {
  int codec_threads = 1;  // 0 = FFmpeg decides
  std::chrono::milliseconds timeout{600'000};
  std::stop_token stop;
  ShardSpace shard_space;   // holds disk for the shard as it grows (shard.h); empty: no limit
  int64_t max_samples = 0;  // 0: max_samples_for(the clip file's size)
  // Sends every packet to the decoder and keeps every frame (no shortcut);
  // the windows are the same either way (tests compare the two).
  bool decode_every_frame = false;
};

struct ShardSummary {
  int windows = 0;  // 0: nothing written (see skipped_reason)
  int64_t sampled_frames = 0;
  uint64_t bytes = 0;           // shard file size
  std::string skipped_reason;   // why no shard was written
  int64_t decoded_frames = 0;   // frames the decoder gave (fewer than the clip's where samples skip frames)
  int64_t packets_dropped = 0;  // packets never sent to the decoder (before a keyframe no sample needs them for)
};

// Decodes the clip once, linearly, and writes shard_out (via shard_out.tmp).
// Frames no used sample shows are skipped where that cannot change the ones it
// shows (unless opts.decode_every_frame).
// Errors: corrupt (names file, member and FFmpeg's message; also a decode
// past opts.timeout), rejected (huge claimed resolution; more samples than
// max_samples: a timestamp gap), cancelled (stop requested), and whatever
// opts.shard_space throws. Every error leaves no file behind.
ShardSummary decode_clip(const std::filesystem::path& clip, const ClipOrigin& origin, const WindowSpec& spec,
                         const std::filesystem::path& shard_out, const DecodeOptions& opts);

}  // namespace kaio::decode
