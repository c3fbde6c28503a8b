#pragma once
// The shard file: every window of one clip, laid out so the trainer can mmap it.
//
// Layout (all integers little-endian):
//   offset 0   header, 64 bytes:
//              char     magic[8]      "KAIOSHRD"
//              uint32   version       1
//              uint32   frames        T
//              uint32   height        H
//              uint32   width         W
//              uint32   channels      C (3: RGB)
//              uint32   windows       N
//              uint64   window_bytes  T*H*W*C rounded up to 64
//              uint64   meta_offset   where the metadata table starts
//              uint64   meta_bytes    its length
//              (zero padding to 64)
//   offset 64  window i's frames at 64 + i*window_bytes: T frames of H x W x C
//              uint8, frame-major, row-major, RGB interleaved.
//   meta_offset, per window in order:
//              float64  first_time    presentation time of its first frame, seconds
//              uint32 len + bytes     source file (the archive in the repo)
//              uint32 len + bytes     member name inside the archive
//              uint32 len + bytes     caption (may be empty)
// The metadata sits after the data so windows can be written while decoding.
// Writers create shard_out + ".tmp", fsync it and rename it when complete.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/mapped_file.h"

namespace kaio::decode {

struct WindowSpec;

inline constexpr char kShardMagic[8] = {'K', 'A', 'I', 'O', 'S', 'H', 'R', 'D'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr uint64_t kShardHeaderBytes = 64;

struct WindowInfo {
  double first_time = 0;  // seconds
  std::string source_file;
  std::string member;
  std::string caption;
};

// Bytes one window's frames occupy in the file (64-byte aligned).
uint64_t window_bytes(const WindowSpec& spec);
// File size of a shard with `windows` windows whose per-window metadata strings
// (source file + member + caption) add up to `meta_bytes` each.
uint64_t shard_bytes(const WindowSpec& spec, int windows, size_t meta_bytes);

// Disk held for a shard as it grows: called with the size the file will have
// once finished with one more window (or at finish()), before anything past
// what is held is written; returns the bytes now held (>= the size asked) or
// throws. The file never grows past the last value returned.
using ShardSpace = std::function<uint64_t(uint64_t bytes)>;

// Writes a shard window by window; nothing is visible at `path` until finish().
class ShardWriter {
 public:
  // Without `space` the file may grow without limit (tests, the probe tool).
  ShardWriter(std::filesystem::path path, const WindowSpec& spec, ShardSpace space = {});
  ~ShardWriter();  // removes the temporary file if finish() was not reached
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // `frames` holds T frames of H*W*3 bytes each.
  void add_window(std::span<const uint8_t> frames, WindowInfo info);
  // Writes the metadata and header, fsyncs, renames to the final path. Returns its size.
  uint64_t finish();
  int windows() const { return static_cast<int>(infos_.size()); }
  // The file's size once finished with the windows so far.
  uint64_t finished_bytes() const;

 private:
  void write_at(uint64_t offset, const void* data, size_t size);
  void hold(uint64_t bytes);

  std::filesystem::path path_;
  std::filesystem::path tmp_;
  Fd fd_;
  uint32_t frames_, height_, width_;
  uint64_t window_bytes_;
  std::vector<WindowInfo> infos_;
  uint64_t meta_bytes_ = 0;  // metadata of the windows so far, as finish() writes it
  ShardSpace space_;
  uint64_t held_ = 0;  // bytes space_ holds for the file
};

// Read-only view of a shard through mmap. Throws Error(corrupt) naming the file
// when the header or the metadata does not hold together.
class ShardReader {
 public:
  explicit ShardReader(const std::filesystem::path& path);
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  int windows() const { return static_cast<int>(infos_.size()); }
  int frames() const { return static_cast<int>(frames_); }
  int height() const { return static_cast<int>(height_); }
  int width() const { return static_cast<int>(width_); }
  size_t frame_bytes() const { return static_cast<size_t>(height_) * width_ * 3; }
  const uint8_t* window(int i) const;
  const WindowInfo& info(int i) const;

 private:
  std::filesystem::path path_;
  MappedFile map_;
  uint32_t frames_ = 0, height_ = 0, width_ = 0;
  uint64_t window_bytes_ = 0;
  std::vector<WindowInfo> infos_;
};

}  // namespace kaio::decode
