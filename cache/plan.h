#pragma once
// The training plan: which file comes when, and in which order windows are
// trained. Everything is a pure function of (seed, epoch, chunk, pass) built on
// SplitMix64 and our own Fisher-Yates, never std::shuffle or std:: distributions
// (those differ between standard libraries), so the order is the same on every
// machine and across restarts.
//
// Order within an epoch: files in file_order(seed, epoch, n) (positions index the
// ledger's path-sorted file list); clips in plan order (file order, then member
// order within the archive); consecutive groups of K = shuffle_clips clips form
// chunk 0, 1, 2, ...; a chunk's windows are trained `repeat` times, each pass in
// its own seeded permutation (chunk_windows), before the next chunk starts.
//
// Resume: a run killed after saving PlanCursor C and restarted with
// WindowSequence(seed, K, repeat, C), fed the same clips from clip number
// C.chunk_index * K on, trains exactly the suffix an uninterrupted run would.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kaio::cache {

struct ClipWindows {
  std::string clip;    // state::ClipId
  int64_t windows = 0;
  size_t file_pos = 0;  // position of its source file in file_order
};

struct WindowRef {
  std::string clip;
  int64_t window = 0;
  bool operator==(const WindowRef&) const = default;
};

// The position of the next window to train.
struct PlanCursor {
  int epoch = 0;
  size_t file_pos = 0;      // file of the current chunk's first clip: fetch resumes there
  int64_t chunk_index = 0;
  int64_t window_pos = 0;   // within the current pass's permutation
  int pass = 0;
  bool operator==(const PlanCursor&) const = default;

  std::string to_string() const;  // "v1 epoch=0 file=3 chunk=12 window=40 pass=1"
  // Throws Error(corrupt) naming the text when it is not a cursor.
  static PlanCursor parse(std::string_view text);
};

std::vector<size_t> file_order(uint64_t seed, int epoch, size_t n_files);
// The permutation of (clip, window) pairs for one pass over one chunk.
std::vector<WindowRef> chunk_windows(uint64_t seed, int epoch, int64_t chunk_index, int pass,
                                     const std::vector<ClipWindows>& clips);

// Feeds the trainer one window at a time as clips become ready. Not thread-safe:
// one owner (the trainer loop).
class WindowSequence {
 public:
  WindowSequence(uint64_t seed, int shuffle_clips, int repeat, PlanCursor start);

  // The epoch's clips in plan order, starting with clip number start.chunk_index * K.
  // Returns the chunk the clip belongs to (for ShardRetention::chunk_formed).
  int64_t add_clip(ClipWindows clip);
  // No more clips this epoch: the last chunk may be shorter than K.
  void finish_epoch();

  // The next window; nullopt while the current chunk is incomplete or the epoch is over.
  std::optional<WindowRef> next();
  PlanCursor cursor() const { return cursor_; }
  bool epoch_done() const;
  // Clips of the chunk being trained (empty until it is complete).
  const std::vector<ClipWindows>& current_chunk() const { return chunk_; }

 private:
  bool form_chunk();
  void advance_if_pass_done();

  uint64_t seed_;
  size_t shuffle_clips_;
  int repeat_;
  PlanCursor cursor_;
  bool finished_ = false;
  int64_t clips_added_;  // clip number of the next add_clip in the epoch
  std::deque<ClipWindows> pending_;
  std::vector<ClipWindows> chunk_;
  std::vector<WindowRef> order_;  // permutation of the current pass
};

}  // namespace kaio::cache
