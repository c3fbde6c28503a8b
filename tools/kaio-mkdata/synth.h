#pragma once
// Synthetic datasets for tests, demos and benchmarks: clips of moving shapes
// over a drifting textured background, encoded with libavcodec, packed in the
// layouts of the real datasets. Everything is deterministic from the seed.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace kaio::mkdata {

struct ClipSpec {
  int width = 640;
  int height = 360;
  double fps = 30;
  double seconds = 4;
  uint64_t seed = 0;
  std::string encoder;  // "" = libx264 if present, else mpeg4
};

struct EncodedClip {
  std::string encoder;  // the encoder actually used
  std::string caption;  // a sentence describing the motion
  int64_t frames = 0;
};

// Writes an MP4 file. Throws kaio::Error naming the file on failure.
EncodedClip encode_clip(const std::filesystem::path& out, const ClipSpec& spec);

enum class Layout { llava, physicalai };

struct DatasetSpec {
  Layout layout = Layout::llava;
  std::filesystem::path out;
  uint64_t seed = 0;
  int clips = 8;  // used when target_bytes is 0
  int clips_per_archive = 4;
  uint64_t target_bytes = 0;  // keep adding clips until the archives reach this size
  ClipSpec clip;              // size, fps and length of every clip
};

struct DatasetSummary {
  std::vector<std::filesystem::path> archives;  // relative to out
  std::filesystem::path captions;               // relative to out; empty for physicalai
  int clips = 0;
  uint64_t bytes = 0;
  std::string encoder;
};

// Called after each batch of clips is written, with the totals so far.
using DatasetProgress = std::function<void(const DatasetSummary& so_far)>;

DatasetSummary write_dataset(const DatasetSpec& spec, const DatasetProgress& progress = {});

}  // namespace kaio::mkdata
