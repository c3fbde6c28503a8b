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
// With a byte cap a chunk also closes after the clip whose shard brings it to
// the cap: a chunk must fit the budget beside the next clip being decoded, or
// training (the only thing that frees shards) could wait for decoding forever.
// The cap depends only on the budget, so chunks stay a function of the data.
//
// Resume: a run killed after saving PlanCursor C and restarted with
// WindowSequence(seed, K, repeat, C), fed the same clips of the epoch (the
// ledger keeps every clip's id and window count, even once its shard is gone),
// trains exactly the suffix an uninterrupted run would.
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kaio::cache {

struct ClipWindows {
  std::string clip;  // state::ClipId
  int64_t windows = 0;
  size_t file_pos = 0;  // position of its source file in file_order
  uint64_t bytes = 0;   // its shard on disk, for the chunk byte cap
};

struct WindowRef {
  std::string clip;
  int64_t window = 0;
  bool operator==(const WindowRef&) const = default;
};

// The position of the next window to train.
struct PlanCursor {
  int epoch = 0;
  size_t file_pos = 0;  // file of the current chunk's first clip: fetch resumes there
  int64_t chunk_index = 0;
  int64_t window_pos = 0;  // within the current pass's permutation
  int pass = 0;
  // Clips before the current chunk (-1: chunk_index * K, as v1 cursors mean),
  // and the current chunk's clip count once formed (0: not formed), so that a
  // resume forms it again with the same clips whatever the cap is then.
  int64_t first_clip = -1;
  int64_t chunk_clips = 0;
  bool operator==(const PlanCursor&) const = default;

  // "v2 epoch=0 file=3 chunk=12 first=48 clips=4 window=40 pass=1"
  std::string to_string() const;
  // Reads v2 and v1 ("v1 epoch=0 file=3 chunk=12 window=40 pass=1").
  // Throws Error(corrupt) naming the text when it is not a cursor.
  static PlanCursor parse(std::string_view text);
};

std::vector<size_t> file_order(uint64_t seed, int epoch, size_t n_files);
// The permutation of (clip, window) pairs for one pass over one chunk.
std::vector<WindowRef> chunk_windows(uint64_t seed, int epoch, int64_t chunk_index, int pass,
                                     const std::vector<ClipWindows>& clips);

// Feeds the trainer one window at a time as clips become ready. Clips may arrive
// out of plan order across files (parallel downloads and decodes): they wait
// here until every earlier file is complete. Not thread-safe: one owner.
class WindowSequence {
 public:
  // Called when a chunk is formed (for ShardRetention::chunk_formed); again for
  // the same chunk after a resume.
  using ChunkListener = std::function<void(int epoch, int64_t chunk_index, const std::vector<ClipWindows>& clips)>;

  // Resume: feed the epoch from its start as usual; clips numbered below
  // start.chunk_index * K (already trained) are skipped.
  // chunk_bytes_cap 0: chunks of K clips only.
  WindowSequence(uint64_t seed, int shuffle_clips, int repeat, PlanCursor start, ChunkListener on_chunk = {},
                 uint64_t chunk_bytes_cap = 0);

  // Clips of one file arrive in member order; clip.file_pos places the file.
  // Throws Error(internal) for a file already marked complete.
  void add_clip(ClipWindows clip);
  // Every clip of the file at `file_pos` was added (none for a failed file).
  void file_complete(size_t file_pos);
  // No more clips this epoch: every file is complete; the last chunk may be short.
  void finish_epoch();

  // The next window; nullopt while the current chunk is incomplete or the epoch is over.
  std::optional<WindowRef> next();
  PlanCursor cursor() const { return cursor_; }
  bool epoch_done() const;
  // Clips of the chunk being trained (empty between chunks).
  const std::vector<ClipWindows>& current_chunk() const { return chunk_; }

  // For the epoch's ETA: files complete so far, windows (times repeat) of the
  // clips added so far, and of those the windows not yet handed out.
  struct Progress {
    int64_t files_complete = 0;
    int64_t windows_added = 0;
    int64_t windows_left = 0;
  };
  Progress progress() const;

 private:
  void release(ClipWindows clip);
  void release_completed_files();
  bool form_chunk();
  size_t chunk_size_ready() const;
  void advance_if_pass_done();

  uint64_t seed_;
  size_t shuffle_clips_;
  int repeat_;
  PlanCursor cursor_;
  ChunkListener on_chunk_;
  uint64_t chunk_bytes_cap_;
  int64_t skip_below_;                                  // clip number of the first untrained chunk's first clip
  int64_t resume_chunk_clips_;                          // the resumed chunk's size, until it is formed again
  int64_t released_ = 0;                                // clips released in plan order so far this epoch
  int64_t windows_added_ = 0;                           // of every clip added, skipped ones included
  size_t next_file_ = 0;                                // plan position of the first incomplete file
  std::map<size_t, std::vector<ClipWindows>> waiting_;  // clips of later files
  std::set<size_t> complete_;
  bool finished_ = false;
  std::deque<ClipWindows> pending_;  // released, not yet in a chunk
  std::vector<ClipWindows> chunk_;
  std::vector<WindowRef> order_;  // permutation of the current pass
};

}  // namespace kaio::cache
